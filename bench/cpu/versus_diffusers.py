"""Our engine against diffusers' HunyuanVideoFramepackPipeline, side by side in one process.

    python bench/cpu/versus_diffusers.py --json [--sections 4] [--resolution 256] [--steps 10] [--repeats 3]

Same tiny models, picture size, steps, sections and transformer calls (their Euler scheduler
and our UniPC both call the transformer once per step). Each side's wall time covers the
whole job a user asks for: prompt and picture encoding, sampling, decoding and an MP4 on
disk (theirs written once at the end from the frames the pipeline returns; ours also writes
the MP4 so far after every section). Runs alternate between the two sides to share any noise
of the machine; medians are reported. The last stdout line is JSON with both times and `ratio`
(ours over theirs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from framepack_core.events import Finished  # noqa: E402
from framepack_core.request import Request  # noqa: E402
from framepack_core.engine.session import Session  # noqa: E402
from framepack_core.engine.session_config import SessionConfig  # noqa: E402
from framepack_core.method.buckets import nearest_bucket  # noqa: E402
from framepack_core.media.pictures import crop_to_bucket  # noqa: E402
from framepack_core.models.loading import load_models  # noqa: E402
from framepack_core.method.schedule import FPS  # noqa: E402
from framepack_core.media.video import write_mp4  # noqa: E402
from framepack_core.starts import FromPicture, begin


def their_pipeline(models):
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline

    # Dynamic shifting so that the pipeline's `mu` (the same flux shift as ours) is applied.
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = HunyuanVideoFramepackPipeline(
        text_encoder=models.text_encoder, tokenizer=models.tokenizer, transformer=models.transformer,
        vae=models.vae, scheduler=scheduler, text_encoder_2=models.text_encoder_2,
        tokenizer_2=models.tokenizer_2, image_encoder=models.image_encoder,
        feature_extractor=models.feature_extractor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_theirs(pipe, models, picture: Image.Image, args, output: Path) -> float:
    height, width = nearest_bucket(picture.height, picture.width, args.resolution)
    crop = Image.fromarray(crop_to_bucket(picture, args.resolution))
    template = {"template": models.spec.prompt_template, "crop_start": models.spec.crop_start}
    started = time.perf_counter()
    frames = pipe(image=crop, prompt=args.prompt, height=height, width=width,
                  num_frames=args.sections * (4 * (args.window - 1) + 1), latent_window_size=args.window,
                  num_inference_steps=args.steps, guidance_scale=10.0, prompt_template=template,
                  generator=torch.Generator().manual_seed(31337), output_type="np").frames[0]
    write_mp4((np.clip(frames, 0, 1) * 255).round().astype(np.uint8), output, crf=16)
    return time.perf_counter() - started, len(frames)


def run_ours(models, picture_path: Path, args, output: Path) -> float:
    request = Request.from_fields(image=picture_path, model="tiny", prompt=args.prompt, steps=args.steps,
                                  window=args.window, seconds=args.sections * 4 * args.window / FPS,
                                  resolution=args.resolution, path=output,
                                  step_cache=False)  # theirs has none: the same transformer work on both sides
    session = Session(SessionConfig(device="cpu"), loader=lambda name, models_dir=None, progress=None: models)
    started = time.perf_counter()
    finished = begin(FromPicture(request)).execute(session, lambda event: None)
    if not isinstance(finished, Finished) or finished.video is None:
        raise SystemExit("our engine did not finish")
    return time.perf_counter() - started, finished.frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--window", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", default="a slow pan over a city at night")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()

    models = load_models("tiny")
    pipe = their_pipeline(models)
    workdir = Path(tempfile.mkdtemp(prefix="bench-versus-"))
    picture_path = workdir / "start.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(picture_path)
    picture = Image.open(picture_path).convert("RGB")

    with torch.no_grad():
        run_ours(models, picture_path, args, workdir / "warmup.mp4")  # first-call costs, on neither side
        ours, theirs = [], []
        for i in range(args.repeats):
            seconds, our_frames = run_ours(models, picture_path, args, workdir / f"ours-{i}.mp4")
            ours.append(seconds)
            seconds, their_frames = run_theirs(pipe, models, picture, args, workdir / f"theirs-{i}.mp4")
            theirs.append(seconds)
            print(f"run {i + 1}: ours {ours[-1]:.2f} s, theirs {theirs[-1]:.2f} s", file=sys.stderr, flush=True)

    result = {
        "sections": args.sections, "steps": args.steps, "resolution": args.resolution,
        "frames_ours": our_frames, "frames_theirs": their_frames,
        "ours_seconds": round(statistics.median(ours), 3), "theirs_seconds": round(statistics.median(theirs), 3),
        "ours_runs": [round(s, 3) for s in ours], "theirs_runs": [round(s, 3) for s in theirs],
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
