"""Host memory of a finishing run is flat in the video's length: frames are streamed through ffmpeg both ways.

    python bench/cpu/finishing_memory.py --json                        # 544x704, 37 and 145 frames (1 s and 5 s)
    python bench/cpu/finishing_memory.py --width 160 --height 96 --frames 9,33 --json   # the smallest, for CI

For each length a clip is written (moving gradients, H.264), and a fresh process upscales it x2 with an
upscaler file in Real-ESRGAN x2plus's published layout (random weights; `--features`/`--blocks` narrower than
the published 64/23 unless given, or `--model FILE` for a real one), loaded through spandrel's detection, on
the CPU or the GPU the process finds. A thread samples the process's anonymous resident memory (its heap:
memory/host.anonymous_resident_bytes) every 10 ms; on a GPU the peak allocated VRAM is read too. The last
stdout line is JSON with each length's peaks and `heap_growth_ratio` (longest / shortest), which should stay
within 1.10.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=704)
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--frames", default="37,145", help="clip lengths in frames (FramePack's 1 s and 5 s)")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--model", default=None, help="an x2 upscaler file instead of the built one")
    parser.add_argument("--part-frames", type=int, default=30)
    parser.add_argument("--vram-budget", type=float, default=None, help="GiB, on a GPU")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("CLIP", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.part_frames, args.vram_budget)), flush=True)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        result = parent(args, Path(scratch))
    print(json.dumps(result), flush=True)


def parent(args, scratch: Path) -> dict:
    from tests.support.finishing_models import esrgan_state, save
    from tests.support.mp4info import write_clip

    model = Path(args.model) if args.model else save(esrgan_state(2, args.features, args.blocks),
                                                     scratch / "x2.pth")
    sizes = []
    for count in (int(n) for n in args.frames.split(",")):
        clip = write_clip(scratch / f"clip-{count}.mp4", args.width, args.height, 30, count)
        command = [sys.executable, __file__, "--child", str(clip), str(model), str(scratch / f"out-{count}"),
                   "--part-frames", str(args.part_frames)]
        if args.vram_budget is not None:
            command += ["--vram-budget", str(args.vram_budget)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        sizes.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{count} frames: peak heap {sizes[-1]['peak_heap_bytes'] / 2**20:.1f} MiB, "
              f"{sizes[-1]['seconds']:.1f} s", file=sys.stderr)
    heaps = [s["peak_heap_bytes"] for s in sizes]
    return {"bench": "finishing_memory", "width": args.width, "height": args.height, "scale": 2, "sizes": sizes,
            "heap_growth_ratio": round(heaps[-1] / heaps[0], 4)}  # the longest clip over the shortest


def child(clip: str, model: str, out: str, part_frames: int, vram_budget: float | None) -> dict:
    import torch

    from memory.host import anonymous_resident_bytes

    from framepack_core.finishing.finishing_run import FinishingRun
    from framepack_core.finishing.placement import device_and_budget
    from framepack_core.finishing.request import FinishRequest

    torch.set_num_threads(1)  # steadier on shared CPUs; memory does not depend on it
    peak, done = [anonymous_resident_bytes() or 0], threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], anonymous_resident_bytes() or 0)

    device, budget = device_and_budget(vram_budget)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    run = FinishingRun.start(FinishRequest("upscale", Path(clip), 2, model=model, folder=Path(out),
                                           part_frames=part_frames), device, budget)
    outcome = run.execute(None, lambda event: None)
    done.set()
    sampler.join()
    vram = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"frames": outcome.frames, "width": outcome.width, "height": outcome.height,
            "peak_heap_bytes": peak[0], "peak_vram_bytes": vram, "vram_budget_bytes": budget,
            "tile": run.method.tile, "device": device, "seconds": round(time.monotonic() - started, 2)}


if __name__ == "__main__":
    main()
