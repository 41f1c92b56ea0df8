"""What the step caches save, and what they cost in fidelity: one video, uncached, with TeaCache and
with MagCache (and optionally diffusers' FirstBlockCache), side by side.

    python bench/cpu/step_cache.py --json                                   # the tiny set on this machine
    python bench/cpu/step_cache.py --json --model framepack --resolution 640 --seconds 5 [--fp8] [--vram-budget 6]

Every run is the whole engine with the same request and seed; only the step cache differs. Per
run: block evaluations computed and skipped (counted inside the blocks), their ratio, seconds
per sampling step and per generated frame, and the distance of its video from the uncached one
(mean absolute difference in 8-bit levels, and PSNR, over all frames of lossless MP4s). The last
stdout line is JSON. On a CUDA machine the memory manager gets --vram-budget (default: what is
free), as with `app.py generate`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from framepack_core.events import Failed, Stage, StageName, Step  # noqa: E402
from framepack_core.models.loading import load_models  # noqa: E402
from framepack_core.request import Request  # noqa: E402
from framepack_core.engine.session import Session  # noqa: E402
from framepack_core.engine.session_config import SessionConfig  # noqa: E402
from framepack_core.starts import FromPicture, begin
from memory import default_device  # noqa: E402


def frames(path: Path) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])


def run(request: Request, session: Session, models) -> dict:
    started = time.perf_counter()
    clock = {"sampling": 0.0, "section_start": None}

    def timed(event) -> None:  # called as each event happens
        now = time.perf_counter()
        if isinstance(event, Stage) and event.name == StageName.SAMPLING:
            clock["section_start"] = now
        elif isinstance(event, Step) and event.step == event.steps:
            clock["sampling"] += now - clock["section_start"]

    finished = begin(FromPicture(request)).execute(session, timed)
    if isinstance(finished, Failed):
        raise SystemExit(f"step_cache.py: the run failed: {finished.message}\n{finished.detail}")
    sampling = clock["sampling"]
    total = time.perf_counter() - started
    steps = finished.sections * request.method.steps
    computed, skipped = finished.blocks_computed, finished.blocks_skipped
    if not finished.step_cache:  # nothing counted: every block ran on every call
        transformer = models.transformer
        blocks = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
        computed, skipped = steps * blocks * (1 if request.method.cfg == 1 else 2), 0
    return dict(
        blocks_computed=computed, blocks_skipped=skipped, block_ratio=round((computed + skipped) / computed, 3),
        saved_fraction=round(skipped / (computed + skipped), 4),
        seconds=round(total, 3), seconds_per_step=round(sampling / steps, 4),
        seconds_per_frame=round(total / finished.frames, 4), attention=finished.attention,
        video=finished.video)


def distance(a: np.ndarray, b: np.ndarray) -> dict:
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return dict(mean_abs_diff=round(float(np.mean(np.abs(diff))), 4),
                psnr_db=round(10 * math.log10(255 ** 2 / mse), 2) if mse else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "framepack", "framepack-f1"), default="tiny")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.4, help="video length (default 2.4: two sections)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--thresholds", default="0.1,0.15", help="TeaCache thresholds, comma separated")
    parser.add_argument("--magcache", default="0.1,0.15", help="MagCache thresholds (its published ratios, K=4)")
    parser.add_argument("--first-block", default="", help="also diffusers' FirstBlockCache at these thresholds")
    parser.add_argument("--fp8", action="store_true", help="store the transformer in FP8 for every run")
    parser.add_argument("--vram-budget", type=float, default=None, metavar="GB", help="CUDA only")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()

    models = load_models(args.model, progress=lambda m: print(m, file=sys.stderr))
    workdir = Path(tempfile.mkdtemp(prefix="bench-step-cache-"))
    picture = workdir / "start.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(picture)
    base = dict(image=picture, model=args.model, prompt="a slow pan over a harbour at dusk", seconds=args.seconds,
                steps=args.steps, resolution=args.resolution, crf=0, fp8=args.fp8)
    session = Session(SessionConfig(vram_budget_gb=args.vram_budget), loader=lambda name, models_dir=None, progress=None: models)
    configs = [("uncached", dict(step_cache=False))]
    configs += [(f"teacache_{t}", dict(cache_method="teacache", cache_threshold=float(t)))
                for t in args.thresholds.split(",") if t]
    configs += [(f"magcache_{t}", dict(cache_method="magcache", cache_threshold=float(t)))
                for t in args.magcache.split(",") if t]
    configs += [(f"first_block_{t}", dict(cache_method="first-block", cache_threshold=float(t)))
                for t in args.first_block.split(",") if t]
    runs = {}
    for name, options in configs:
        request = Request.from_fields(**base, **options, path=workdir / f"{name}.mp4")
        runs[name] = run(request, session, models)
        print(f"{name}: {runs[name]}", file=sys.stderr, flush=True)
    reference = frames(runs["uncached"].pop("video"))
    for name, result in runs.items():
        if name != "uncached":
            result.update(distance(frames(result.pop("video")), reference))
            result["seconds_per_step_vs_uncached"] = round(
                result["seconds_per_step"] / runs["uncached"]["seconds_per_step"], 3)
    print(json.dumps(dict(model=args.model, device=str(default_device()), resolution=args.resolution,
                          seconds=args.seconds, steps=args.steps, frames=int(len(reference)), fp8=args.fp8,
                          runs=runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
