"""Cost per section along one long video: it must stay flat, in time and in memory.

    python bench/cpu/sections.py --json [--sections 16] [--resolution 256] [--steps 10]

The tiny model set at a size where decoding and writing are not negligible. The last stdout
line is JSON: per-section wall times, `section_time_ratio` (median of the last four sections
over the median of sections 2 to 5), `rss_growth_ratio` (resident memory after the last
section over after section 4), and the total seconds spent writing the video.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from framepack_core.events import Failed, Finished, SectionDone, Stage, StageName  # noqa: E402
from framepack_core.models.loading import load_models  # noqa: E402
from framepack_core.settings import FPS  # noqa: E402
from framepack_core.request import Request  # noqa: E402
from framepack_core.engine.session import Session  # noqa: E402
from framepack_core.engine.session_config import SessionConfig  # noqa: E402
from framepack_core.starts import FromPicture, begin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--window", type=int, default=9)
    parser.add_argument("--mode", choices=("inverted", "forward"), default="inverted")
    parser.add_argument("--step-cache", action="store_true",
                        help="skip blocks on some steps (off by default: the work per step then varies with content)")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    if args.sections < 6:
        parser.error("--sections must be at least 6 (the ratios compare sections 2-5 with the last four)")

    process = psutil.Process()
    models = load_models("tiny")
    workdir = Path(tempfile.mkdtemp(prefix="bench-sections-"))
    picture = workdir / "start.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(picture)
    seconds = args.sections * 4 * args.window / FPS
    request = Request.from_fields(image=picture, model="tiny", prompt="a slow pan over a city at night",
                                  seconds=seconds, steps=args.steps, window=args.window, resolution=args.resolution,
                                  mode=args.mode, step_cache=args.step_cache, path=workdir / "video.mp4")

    section_seconds, rss = [], []
    clock = {"section": None, "writing": None, "write_seconds": 0.0}
    outcome = {}

    def on_event(event) -> None:
        # Called on the engine's own thread, so memory is read exactly as each section leaves it.
        now = time.perf_counter()
        if isinstance(event, Stage) and event.name == StageName.SAMPLING:
            clock["section"] = clock["section"] or now
        elif isinstance(event, Stage) and event.name == StageName.WRITING:
            clock["writing"] = now
        elif isinstance(event, SectionDone):
            clock["write_seconds"] += now - clock["writing"]
            section_seconds.append(now - clock["section"])
            clock["section"] = now
            rss.append(process.memory_info().rss)
            print(f"section {event.section + 1}/{event.sections}: {section_seconds[-1]:.2f} s, "
                  f"{event.frames} frames, rss {rss[-1] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
        elif isinstance(event, (Finished, Failed)):
            outcome["event"] = event

    session = Session(SessionConfig(device="cpu"), loader=lambda name, models_dir=None, progress=None: models)
    begin(FromPicture(request)).execute(session, on_event)
    finished = outcome.get("event")
    if not isinstance(finished, Finished):
        print(getattr(finished, "detail", "no result"), file=sys.stderr)
        return 1
    write_seconds = clock["write_seconds"]

    result = {
        "sections": len(section_seconds),
        "frames": finished.frames,
        "resolution": args.resolution,
        "size": [finished.width, finished.height],
        "steps": args.steps,
        "mode": args.mode,
        "step_cache": args.step_cache,
        "section_seconds": [round(s, 3) for s in section_seconds],
        "section_time_ratio": round(statistics.median(section_seconds[-4:]) /
                                    statistics.median(section_seconds[1:5]), 4),
        "rss_growth_ratio": round(rss[-1] / rss[3], 4),
        "rss_mib_after_section_4": round(rss[3] / 2**20, 1),
        "rss_mib_after_last": round(rss[-1] / 2**20, 1),
        "write_seconds_total": round(write_seconds, 3),
        "video_bytes": os.path.getsize(finished.video),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
