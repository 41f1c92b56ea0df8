"""The one run path: a request in, events out, files on disk.

    run = begin(start)              # starts/: a kind of start's request and origin -> Run.start (or Run.again)
    outcome = run.execute(session, emit)   # models from the session; every event to `emit`
    run.stop()                      # from any thread: ends after the current step

The command line, the page, the API and the job queue all go through here and differ only in
how they show the events. Naming and the in-progress file are `files.py`'s; the record of
settings and status is built here, once, for the JSON file, the MP4's metadata and summaries.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Callable


from ..events import Event, Failed, Finished, StageName, Status
from ..failures import Cancelled, ModelsUnavailableError, user_message
from ..media.video_files import stream_frames
from ..settings import FPS
from ..request import Request
from .files import RunFiles
from .first_files import claimed, disk_refusal, write_first
from .mp4_tags import PROMPT_CHARS, TITLE_CHARS, mp4_tags  # noqa: F401  (the MP4's tags; named here before)
from .owner import this_process
from .record import APP, RunRecord, StepCacheUse
from .same_file import check_output_apart

if TYPE_CHECKING:  # origins hold tensors; the run reads them only through their methods
    from ..engine.beginning import Origin

log = logging.getLogger(__name__)


class Run:
    def __init__(self, request: Request, files: RunFiles, origin: Origin):
        self.request = request  # validated
        self.files = files
        self.origin = origin  # how the run starts (a kind of start's origin: starts/)
        self.cancel = threading.Event()
        self.created = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.outcome: Finished | Failed | None = None
        self.stages: list[dict] = []  # what each stage cost (memory/usage.py), once the run has run
        self.finishing: list[dict] = []  # what the finishing steps asked for applied (finishing/after_run.py)

    @classmethod
    def again(cls, request: Request, files: RunFiles, origin: Origin) -> Run:
        """The run `files` belong to, made on under its own name (starts/resume.py): a first record written."""
        run = cls(request, files, origin)
        with disk_refusal(files.folder):
            files.write_record(run.record().to_json())
        return run

    @classmethod
    def start(cls, request: Request, origin: Origin) -> Run:
        """A new run of a validated request (a kind of start made it: starts/): its names claimed, its pictures
        as the model sees them and a first record written (a crash keeps them). ValueError, one sentence for
        the user, before anything is written."""
        check_output_apart(request.output.path, [*origin.reads(), *request.picture_files], len(request.keyframes))
        if request.output.upscale > 1 or request.output.interpolate > 1:
            from ..finishing.after_run import check

            check(request)  # an upscaler that is nowhere: refused before anything is written
        with claimed(request) as files:
            run = cls(request, files, origin)
            write_first(files, request, run.record().to_json())
        return run

    @property
    def status(self) -> Status:
        """Running until the run has an outcome; then finished, stopped or failed, as its record says."""
        if isinstance(self.outcome, Failed):
            return Status.FAILED
        if isinstance(self.outcome, Finished):
            return Status.STOPPED if self.outcome.stopped else Status.FINISHED
        return Status.RUNNING

    def stop(self) -> None:
        self.cancel.set()

    def refuse(self, message: str) -> None:
        """The run will not be made (e.g. another is going): its record says why."""
        self.outcome = Failed(message)
        self.files.write_record(self.record().to_json())

    def discard(self, message: str) -> None:
        """The run will not be made and never started: a new run's files (what `start` wrote) are removed, so
        nothing shows for it; a resumed run's belong to its earlier run and stay, its record saying why."""
        if self.files.latents.exists() or self.files.video.exists() or self.files.in_progress.exists():
            self.refuse(message)
            return
        self.outcome = Failed(message)
        keyframes = [self.files.keyframe(n) for n in range(1, len(self.request.keyframes) + 1)]
        for path in (self.files.picture, self.files.end_picture, *keyframes, self.files.record):  # the claim last
            path.unlink(missing_ok=True)

    def execute(self, session, emit: Callable[[Event], None]) -> Finished | Failed:
        """Make the video with the session's models and engine. Every failure ends this run only, as a
        Failed event and a failed record."""
        from memory.usage import device_usage  # torch: the session has it loaded already

        from ..engine.work import Made, Work

        started = time.monotonic()
        meter = _usage_meter(session.device)
        emit = _sampling(meter, emit)
        manager, never_started = None, False
        try:
            meter.begin(StageName.LOADING)
            models, manager = session.prepare(self.request, emit)
            meter.watch(*device_usage(getattr(manager, "device", None)))
            if self.cancel.is_set():
                raise Cancelled()
            sections_emit = emit
            if self.request.output.upscale > 1 or self.request.output.interpolate > 1:
                from ..finishing.after_run import as_made

                sections_emit = as_made(self.files, self.request, emit)  # the first step, per finished section
            work = Work(self.request, self.origin, self.files.in_progress, self.files.latents, self._tags,
                        sections_emit, self.cancel, meter)
            outcome = self._finish(session.engine(work, models, manager), started)
        except Cancelled:
            outcome = self._finish(Made(stopped=True), started)
        except Exception as error:
            # The traceback travels in the event (`detail`) for logs; users read the one sentence.
            log.info("generation failed", exc_info=True)
            partial = self.files.in_progress if self.files.in_progress.exists() else None
            outcome = Failed(user_message(error, self.files.folder), traceback.format_exc(), partial_video=partial)
            never_started = isinstance(error, ModelsUnavailableError)  # refused before its first stage
        finally:
            self.stages = meter.close()
            session.release(manager)
        output = self.request.output
        if isinstance(outcome, Finished) and outcome.video and not outcome.stopped and (
                output.upscale > 1 or output.interpolate > 1):
            from ..finishing.after_run import finish_made_video

            self.finishing = finish_made_video(outcome.video, self.request, emit, self.cancel)
        elif output.upscale > 1 or output.interpolate > 1:  # stopped or failed: the finished part, joined
            from ..finishing.after_run import kept

            self.finishing = kept(self.files, self.request)
        self.outcome = outcome
        if isinstance(outcome, Failed) and never_started:
            self.discard(outcome.message)  # nothing made and nothing to resume: no failed run in the outputs
        else:
            self.files.try_write_record(self.record().to_json())  # a full disk must not hide the outcome's message
        emit(outcome)
        return outcome

    def metadata(self) -> dict:
        """What the MP4's metadata keeps: everything that made the video, so it can be made again."""
        return {"app": APP} | self.request.settings()

    def record(self) -> RunRecord:
        """The run's record: settings and status, as the JSON file, summaries and the API give it."""
        request, files, outcome, origin = self.request, self.files, self.outcome, self.origin
        ended = _ended_fields(outcome, files, request)
        return RunRecord(**dict(
            created=self.created, model=request.model, input=files.picture.name, input_name=request.image_name,
            end_frame=files.end_picture.name if request.end_image is not None else None,
            keyframe_pictures=tuple(files.keyframe(n).name for n in range(1, len(request.keyframes) + 1)),
            video=files.video.name, settings=request.settings(), status=self.status,
            # The video it extends, branches or bridges; and, killed before its first latents, how it starts over.
            **RunRecord.start_fields(origin.described(), origin.restarts()),
            owner=this_process() if outcome is None else None,  # a record whose process is gone is marked when read
            finishing=tuple(self.finishing), stages=tuple(self.stages)) | ended)

    def _tags(self, used: dict) -> dict[str, str]:
        """The MP4's tags: the settings, and what the run used (request.remake_fields reads them back)."""
        return mp4_tags(self.metadata() | used)

    def _finish(self, made, started: float) -> Finished:
        video = None
        if made.sections_done and self.files.in_progress.exists():
            os.replace(self.files.in_progress, self.files.video)
            video = self.files.video
        fps, width, height = FPS, made.width, made.height
        facts = self.origin.stream()
        if facts is not None and made.sections_done:  # an extension joins its source's stream, size and rate
            fps, width, height = facts.fps, facts.width, facts.height
        frames = made.frames
        if video is not None:  # what the file holds, not what the sections were meant to add up to
            try:
                frames = stream_frames(video)
            except OSError as error:
                log.warning("counting the frames of %s: %s", video, error)
        return Finished(video, frames, fps, made.sections_done, width, height,
                        self.request.method.seed, time.monotonic() - started, made.stopped, attention=made.attention,
                        vae_tiling=made.vae_tiling, fp8=made.fp8, step_cache=made.step_cache,
                        blocks_computed=made.blocks_computed, blocks_skipped=made.blocks_skipped)


def _usage_meter(device):
    """What each stage costs, measured on the session's device (torch's CUDA statistics on a GPU)."""
    from memory.usage import CudaMemory, UsageMeter

    return UsageMeter(CudaMemory(device) if device.type == "cuda" else None)


def _sampling(meter, emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """`emit`, reading the process's memory at every event too (each step, each preview)."""
    def sampled(event: Event) -> None:
        meter.sample()
        emit(event)

    return sampled


def _ended_fields(outcome: Finished | Failed | None, files: RunFiles, request: Request) -> dict:
    """The record's fields that the outcome sets ({} while the run goes): a failed run's message and the video so
    far; a finished or stopped one's what it made and what it used (the settings say what was asked for)."""
    if isinstance(outcome, Failed):
        partial = outcome.partial_video.name if outcome.partial_video else None
        return dict(error=outcome.message, video=None, partial_video=partial)
    if not isinstance(outcome, Finished):
        return {}
    cache = StepCacheUse(enabled=bool(outcome.step_cache))
    if outcome.step_cache:
        computed, skipped = outcome.blocks_computed, outcome.blocks_skipped
        cache = replace(cache, method=outcome.step_cache, threshold=request.speed.cache_threshold,
                        blocks_computed=computed, blocks_skipped=skipped,
                        speedup=round((computed + skipped) / computed, 3) if computed else None)
    return dict(video=files.video.name if outcome.video else None, frames=outcome.frames, fps=outcome.fps,
                sections=outcome.sections, width=outcome.width, height=outcome.height, seed=outcome.seed,
                seconds_elapsed=round(outcome.seconds_elapsed, 3),
                stopped=outcome.stopped, attention_used=outcome.attention, vae_tiling_used=outcome.vae_tiling,
                fp8_used=outcome.fp8, step_cache=cache)
