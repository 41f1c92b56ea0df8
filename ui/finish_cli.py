"""`python app.py upscale VIDEO --scale 2|4` and `python app.py interpolate VIDEO --factor 2|4`: finishing runs
from the command line, progress on stderr (frames done, total, speed, time left).

The run is framepack_core.finishing's, the same the page and the queue use; this module parses flags and shows
events. argparse only at import: `--help` loads no torch.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from framepack_core.settings import DEFAULTS

from .flags import add_setting_flags


def add_finish_parsers(commands) -> None:
    up = commands.add_parser("upscale", help="make a video bigger (x2 or x4) with an upscaler model, into a new MP4",
                             allow_abbrev=False)
    up.add_argument("video", nargs="?", help="the video to upscale (it is only read)")
    up.add_argument("--scale", type=int, choices=(2, 4), default=2, help="how many times wider and taller (default 2)")
    up.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                    help="an upscaler file (.pth or .safetensors, any architecture spandrel knows), a file's name in "
                         "--upscalers-dir, or realesrgan-x2plus | realesrgan-x4plus | realesr-general-x4v3 "
                         "(downloaded on first use); default: realesrgan-x2plus for --scale 2, realesrgan-x4plus for 4")
    up.add_argument("--upscalers-dir", default="upscalers", help="folder of upscaler files (default upscalers)")
    up.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                    help="tile side; default: the largest that fits the VRAM budget (512 on the CPU)")
    inter = commands.add_parser("interpolate", help="make a video smoother (2 or 4 times the frame rate), into a new "
                                "MP4", allow_abbrev=False)
    inter.add_argument("video", nargs="?", help="the video to interpolate (it is only read)")
    inter.add_argument("--factor", type=int, choices=(2, 4), default=2,
                       help="frame rate multiplier: 30 fps becomes 60 or 120 (default 2)")
    inter.add_argument("--model", default=None, metavar="PATH",
                       help="a RIFE 4.x flownet file (Practical-RIFE's flownet.pkl); default: the first in --rife-dir, "
                            "else ffmpeg's minterpolate")
    inter.add_argument("--rife-dir", default="rife", help="folder with a RIFE flownet file (default rife)")
    for parser in (up, inter):
        parser.add_argument("--resume", default=None, metavar="PATH",
                            help="continue a stopped, failed or killed finishing run (its JSON, MP4 or in-progress "
                                 "MP4) after its last whole part; the other flags are ignored")
        add_setting_flags(parser, ("folder",),
                          folder=dict(help=f"folder for the result (default {DEFAULTS['folder']})"))
        parser.add_argument("--output", default=None, metavar="PATH", help="exact MP4 path for the result")
        parser.add_argument("--part-frames", type=int, default=30, metavar="N",
                            help="source frames per part kept on disk as the run goes (default 30)")
        add_setting_flags(parser, ("vram_budget_gb",),
                          vram_budget_gb=dict(help="GPU memory the run may use, in GiB (default: what is free)"))
        parser.add_argument("--json", action="store_true", help="print the record as one JSON line last")
        parser.add_argument("--queue", action="store_true",
                            help="add it to the job queue of --outputs instead (python app.py queue run runs it)")


def resumes_finishing(args) -> bool:
    """`generate --resume PATH` of a finishing run's file: it is resumed as `upscale/interpolate --resume` would."""
    from framepack_core.finishing.finishing_run import is_finishing

    return bool(getattr(args, "resume", None)) and is_finishing(args.resume)


def request_from_args(args):
    from framepack_core.finishing.request import FinishRequest

    if not args.video:
        raise ValueError(f"Give the video to {args.command} (or --resume PATH).")
    common = dict(model=args.model, folder=Path(args.outputs), output=Path(args.output) if args.output else None,
                  part_frames=args.part_frames)
    if args.command == "upscale":
        return FinishRequest("upscale", Path(args.video), args.scale, upscalers=Path(args.upscalers_dir),
                             tile=args.tile, **common)
    return FinishRequest("interpolate", Path(args.video), args.factor, rife_folder=Path(args.rife_dir), **common)


def finish_command(args) -> int:
    from framepack_core.failures import ModelsUnavailableError
    from framepack_core.finishing.finishing_run import FinishingRun
    from framepack_core.finishing.placement import device_and_budget

    if getattr(args, "queue", False):  # `generate --resume` of a finishing run has no --queue
        return _queue(args)
    device, budget = device_and_budget(args.vram_budget)
    try:
        if args.resume:
            run = FinishingRun.resume(args.resume, device, budget, say=_say)
        else:
            run = FinishingRun.start(request_from_args(args), device, budget, say=_say)
    except (ValueError, ModelsUnavailableError) as error:
        _say(f"error: {error}")
        return 2
    _stop_on_ctrl_c(run)
    outcome = run.execute(None, FinishProgress())
    record = run.record()
    if args.json:
        print(json.dumps(record.to_json()), flush=True)
    if record.status == "failed":
        return 1
    if outcome.stopped:
        _say(f"stopped; {run.parts_done} of {run.parts_total} parts kept"
             + (f" (the video so far: {outcome.video})" if outcome.video else "") + f"; resume with "
             f"python app.py {record.operation} --resume {run.files.record}")
        return 130
    _say(f"wrote {outcome.video} ({outcome.frames} frames, {outcome.width}x{outcome.height}, {outcome.fps:g} fps)")
    return 0


def _queue(args) -> int:
    from jobs.finishing_jobs import add_finishing_job
    from jobs.store import JobStore

    try:
        job_id = add_finishing_job(JobStore(args.outputs), request_from_args(args))
    except ValueError as error:
        _say(f"error: {error}")
        return 2
    _say(f"queued job {job_id}")
    return 0


class FinishProgress:
    """Frames done of the total, speed and time left: one line in place on a terminal, a line per part in a log."""

    def __init__(self, stream=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.clock = clock
        self.started = None
        self.first = 0
        self.last = None  # (source frames done, total) at the latest step

    def __call__(self, event) -> None:
        from framepack_core.events import Failed, SectionDone, Stage, Step

        if isinstance(event, Stage):
            self._line(event.message)
        elif isinstance(event, Step):
            if self.started is None:
                self.started, self.first = self.clock(), event.step - 1  # a resume starts part-way
            self.last = (event.step, event.steps)
            if self.live:
                print(f"\r{self.text(event.step, event.steps)}", end="", file=self.stream, flush=True)
        elif isinstance(event, SectionDone):
            pace = f"; {self.text(*self.last)}" if self.last else ""
            self._line(f"part {event.section + 1}/{event.sections} done: {event.frames} frames written{pace}")
        elif isinstance(event, Failed):
            self._line(f"error: {event.message}")

    def text(self, done: int, total: int) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        speed = (done - self.first) / elapsed
        left = f", about {_clock((total - done) / speed)} left" if speed > 0 and done < total else ""
        return f"frames {done}/{total} ({100 * done / total:.0f}%), {speed:.2f} frames/s{left}"

    def _line(self, message: str) -> None:
        print(("\n" if self.live and self.started is not None else "") + message, file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _stop_on_ctrl_c(run) -> None:
    def stop(signum, frame):
        _say("stopping after the current frame (the parts made are kept; Ctrl+C again to quit now)…")
        run.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, stop)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
