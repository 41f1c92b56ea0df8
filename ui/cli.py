"""`python app.py generate`: one video from the command line, progress on stderr.

The run path is the page's (framepack_core.run.lifecycle); this module only shows its events in a
terminal. Model libraries are imported when a video is made, never for `--help`.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path


def settings_from_args(args) -> dict:
    """The request's settings from `generate`'s flags (the settings table's), by their flat names; flags
    not given are left out, so the request's defaults hold. The one translation of flags, for `generate`
    and `queue`. The session's flags (--models-dir, --ram-budget) are the session's, never a request's."""
    from framepack_core.settings import SETTINGS_LIST, Part

    values = {}
    for setting in SETTINGS_LIST:
        if setting.part is Part.SESSION:
            continue
        value = getattr(args, setting.dest, None) if setting.flag else None  # queue add-folder has no --image
        if setting.flag_values is not None:
            value = setting.flag_values.get(value)
        elif setting.repeats:
            value = tuple(value or ()) or None
        if value is not None:
            values[setting.name] = value
    return values


def request_from_args(args):
    from framepack_core.request import Request

    return Request.from_fields(**settings_from_args(args))


def run_from_args(args):
    """The run `generate`'s flags ask for, begun (its first files written); ValueError for bad input."""
    from framepack_core.starts import begin

    return begin(start_from_args(args))


def start_from_args(args):
    """The start `generate`'s flags name: a new picture, a resumed run (--resume), an extension or branch
    (--extend [--from]) or a bridge (--bridge)."""
    from framepack_core.starts import Bridge, Extend, FromPicture, Resume

    starts = [flag for flag, value in (("--resume", args.resume), ("--extend", args.extend),
                                       ("--bridge", getattr(args, "bridge", None))) if value]
    if len(starts) > 1:
        raise ValueError(f"Give one of {', '.join(starts)}, not {'both' if len(starts) == 2 else 'all three'}.")
    from_seconds = getattr(args, "from_seconds", None)
    if from_seconds is not None and not args.extend:
        raise ValueError("--from says where to branch a video given with --extend.")
    if args.resume:
        return Resume(args.resume)
    if args.extend:
        return Extend(args.extend, args.seconds, from_seconds=from_seconds, output=args.output,
                      **_given_settings(args))
    if getattr(args, "bridge", None):
        return Bridge(*args.bridge, args.seconds, output=args.output, **_given_settings(args))
    if not args.image or args.prompt is None:
        raise ValueError("Give --image and --prompt for a new video (or --resume / --extend / --bridge).")
    return FromPicture(request_from_args(args))


def _given_settings(args) -> dict:
    """The settings flags given on the command line: they take over from a source video's own (except what
    an extension or bridge fixes: its start, length and sampling order)."""
    from framepack_core.settings import SETTINGS, SETTINGS_LIST

    explicit = getattr(args, "given", set())
    flags = settings_from_args(args)
    # All of them: what a continuation cannot honour it refuses (starts/continued.refuse_unhonoured), never drops.
    given = {s.name: flags[s.name] for s in SETTINGS_LIST
             if s.flag and s.dest in explicit and s.name in flags and s.name not in ("seconds", "folder", "path")}
    folder = SETTINGS["folder"].dest  # --outputs
    if folder in explicit:
        given["folder"] = Path(getattr(args, folder))
    return given


def generate_command(args) -> int:
    from framepack_core.events import Status
    from framepack_core.engine.session import Session
    from framepack_core.engine.session_config import SessionConfig

    from .finish_cli import finish_command, resumes_finishing

    if resumes_finishing(args):  # a finishing run is resumed by the same flag as a generation
        return finish_command(args)
    try:
        run = run_from_args(args)
    except ValueError as error:
        _say(f"error: {error}")
        return 2
    session = Session(SessionConfig.from_args(args))
    if args.vram_budget is not None and session.device.type != "cuda":
        _say("note: --vram-budget applies to a CUDA GPU; there is none, so everything runs on the CPU")
    progress = TerminalProgress()
    _stop_on_ctrl_c(run, progress.say)
    outcome = run.execute(session, progress)
    record = run.record()
    if record.status == Status.FAILED:
        if record.partial_video:
            _say(f"the video so far is in {run.files.in_progress}")
        return 1
    if outcome.video is None:
        _say("stopped before the first section was done; no video was written")
        return 130
    _say(f"{'stopped; ' if outcome.stopped else ''}wrote {outcome.video} "
          f"({outcome.frames} frames, {outcome.width}x{outcome.height})")
    cache = record.step_cache
    _say(f"attention: {outcome.attention}; step cache: " + (
        f"{cache.method}, {cache.blocks_skipped} of {cache.blocks_computed + cache.blocks_skipped} "
        "block evaluations skipped" if cache.enabled else "off"))
    if args.json:
        print(json.dumps(record.to_json() | {"output": str(outcome.video), "mode": record.settings["mode"],
                                             "device": str(session.device)}), flush=True)
    return 130 if outcome.stopped else 0


def told_stage(event) -> bool:
    """A stage a terminal tells in a line: loading and encoding (sampling, decoding and writing show as the bar)."""
    from framepack_core.events import Stage, StageName

    return isinstance(event, Stage) and event.name in (
        StageName.LOADING, StageName.ENCODING_PROMPT, StageName.ENCODING_IMAGE)


class TerminalProgress:
    """The run's events on stderr: a line per stage worth telling, and one progress bar for the run.

    On a terminal the bar is drawn once and updated in place: it is the run's work done, each section's
    decode and write counted with its steps by their cost (framepack_core.run.progress), so it is not full
    while the last section decodes; the stage under way is written beside it. Lines (a finished section, a
    notice, Ctrl+C's answer) go above it. In a log (not a terminal) carriage returns would pile up, so each
    section gets one plain line when its sampling ends.
    """

    def __init__(self, stream=None):
        from framepack_core.run.progress import CostedProgress

        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.bar = None
        self.section_started = time.monotonic()
        self.work = CostedProgress()

    def __call__(self, event) -> None:
        from framepack_core.events import Failed, Finished, Notice, SectionDone, Stage, Step

        self.work.update(event)
        if isinstance(event, Step):
            self._step(event)
        elif isinstance(event, Notice):
            self._say(event.message)
        elif isinstance(event, Stage):
            self.section_started = time.monotonic()  # "sampling" comes right before a section's steps
            if told_stage(event):
                self._close()
                self._say(event.message)
            elif self.bar is not None:
                self.bar.set_postfix_str(event.message, refresh=False)
                self._advance()
        elif isinstance(event, SectionDone):
            self._advance()
            self._say(f"section {event.section + 1}/{event.sections} done: {event.frames} frames")
        elif isinstance(event, (Finished, Failed)):
            self._close()
            if isinstance(event, Failed):
                self._say(f"error: {event.message}")

    def say(self, message: str) -> None:
        """A line above the bar (Ctrl+C's answer), or a plain line when there is none."""
        self._say(message)

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.n = round(100 * self.work.fraction, 1)
            self.bar.refresh()

    def _step(self, event) -> None:
        label = f"section {event.section + 1}/{event.sections}"
        if self.live:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=100, desc=label, file=self.stream, leave=True,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
            self.bar.set_description_str(label, refresh=False)
            self.bar.set_postfix_str(f"step {event.step}/{event.steps}", refresh=False)
            self._advance()
        elif event.step == event.steps:
            seconds = time.monotonic() - self.section_started
            self._say(f"{label}: {event.steps} steps in {seconds:.1f} s ({seconds / event.steps:.2f} s/step)")

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _say(self, message: str) -> None:
        if self.bar is not None:  # above the bar, which is drawn again below
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)


def _stop_on_ctrl_c(run, say=None) -> None:
    """The first Ctrl+C stops at the next step and keeps the video so far; a second one quits at once. `say`:
    where its answer goes (the progress's, above its bar)."""

    def stop(signum, frame):
        (say or _say)("stopping after the current step (the video so far is kept; Ctrl+C again to quit now)…")
        run.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, stop)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
