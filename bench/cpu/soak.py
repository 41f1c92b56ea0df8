"""Many short runs back to back through the page's worker: the process must not grow.

    python bench/cpu/soak.py --json [--runs 20] [--resolution 128] [--seconds 1] [--steps 2]

The tiny model set, each run through `Handlers.page_run` as a Start press would make it.
The last stdout line is JSON: resident memory after every run (MiB), the process's own part of it
(`RssAnon`: the weights are memory-mapped files, whose pages the OS keeps or drops as it likes, so
the whole resident size wanders with the page cache), `anon_rss_growth_ratio` (the mean of the last
three runs over the mean of runs 2-4: the first run loads and warms caches, and single runs wander by
a few tens of MiB as freed heap is reused; a leak raises the late runs over the early ones), seconds
per run, and the failures seen.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from framepack_core.models.loading import load_models  # noqa: E402
from memory.host import anonymous_resident_bytes, limit_heap_arenas  # noqa: E402
from framepack_core.engine.session import Session  # noqa: E402
from framepack_core.engine.session_config import SessionConfig  # noqa: E402
from ui.handlers import Handlers, ServerSettings  # noqa: E402
from ui.worker import Worker  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="at least 6 (the ratio compares runs 2-4 with the last three)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="(always on) the last line is JSON")
    args = parser.parse_args()
    if args.runs < 6:
        parser.error("--runs must be at least 6")

    # As the app starts: heap arenas capped first (ui/serve.py), then the models, which the app loads lazily.
    limit_heap_arenas(2)
    models = {}
    worker = Worker(session=Session(SessionConfig(device="cpu"),
                                    loader=lambda name, models_dir=None, progress=None: models.get("tiny")))
    models["tiny"] = load_models("tiny")
    process = psutil.Process()
    picture = Image.new("RGB", (160, 112), (10, 60, 200))
    rss, anon, times, failures = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="framepack-soak-") as outputs:
        handlers = Handlers(worker, ServerSettings(model="tiny", resolution=args.resolution, outputs=Path(outputs)))
        try:
            for run in range(args.runs):
                started = time.monotonic()
                form = dict(image=picture, prompt="waves roll in", seconds=args.seconds, seed=run, steps=args.steps,
                            model="tiny", resolution=args.resolution)
                updates = list(handlers.page_run(form))
                times.append(time.monotonic() - started)
                if "Done:" not in updates[-1].progress:
                    failures.append(updates[-1].progress)
                gc.collect()
                rss.append(process.memory_info().rss)
                anon.append(anonymous_resident_bytes() or rss[-1])
                print(f"run {run + 1}/{args.runs}: {times[-1]:.2f} s, rss {rss[-1] / 2**20:.0f} MiB, "
                      f"own {anon[-1] / 2**20:.0f} MiB", file=sys.stderr)
        finally:
            worker.close()
    result = {"runs": args.runs, "rss_mib": [round(r / 2**20, 1) for r in rss],
              "anon_rss_mib": [round(r / 2**20, 1) for r in anon], "rss_growth_ratio": round(max(rss) / rss[0], 4),
              "anon_rss_growth_ratio": round(_mean(anon[-3:]) / _mean(anon[1:4]), 4),
              "seconds_per_run": round(sum(times) / len(times), 3),
              "failures": failures, "pid": os.getpid()}
    print(json.dumps(result))
    return 0 if not failures and result["anon_rss_growth_ratio"] <= 1.10 else 1


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    sys.exit(main())
