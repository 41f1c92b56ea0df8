"""The one run path: a request in, events out, files on disk.

    run = Run.start(request)        # validated, names claimed, picture and a first record written
    outcome = run.execute(session, emit)   # models from the session; every event to `emit`
    run.stop()                      # from any thread: ends after the current step

The command line, the page, the API and the job queue all go through here and differ only in
how they show the events. Naming and the in-progress file are `run_files.py`'s; the record of
settings and status is built here, once, for the JSON file, the MP4's metadata and summaries.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Callable

from PIL import Image

from .events import Event, Failed, Finished
from .failures import Cancelled, disk_message, user_message
from .media.pictures import crop_to_bucket, resize_and_center_crop
from .options import FPS
from .request import Request
from .run_files import RunFiles, claim_files
from .run_owner import this_process

log = logging.getLogger(__name__)
APP = "FramePack desktop"


class Run:
    def __init__(self, request: Request, files: RunFiles, continuation=None):
        self.request = request  # validated
        self.files = files
        self.continuation = continuation  # continuation.Continuation: resuming or extending; None for a new video
        self.cancel = threading.Event()
        self.created = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.outcome: Finished | Failed | None = None

    @classmethod
    def resume(cls, path) -> Run:
        """The stopped, failed or killed run that `path` (its MP4, in-progress MP4, JSON or latents) belongs
        to, continued from its last finished section under the same name. ValueError if there is none."""
        from .continuation import resume_parts

        request, files, continuation = resume_parts(path)
        run = cls(request, files, continuation)
        with _disk_refusal(files.folder):
            files.write_record(run.record())
        return run

    @classmethod
    def extend(cls, path, seconds: float, **overrides) -> Run:
        """A new run continuing the video at `path` by `seconds` (forward sampling); `overrides` are flat
        request fields (prompt=…, seed=…, model=…, folder=…, output=…). ValueError on bad input."""
        from .continuation import extension_parts

        request, continuation = extension_parts(path, seconds, **overrides)
        return cls.start(request, continuation=continuation)

    @classmethod
    def start(cls, request: Request, continuation=None) -> Run:
        """Validate, claim the names, and write the cropped picture and a first record (a crash keeps them).

        Raises ValueError, with one sentence for the user, before anything is written.
        """
        request = request.validated()
        _check_writable(request.output.folder)
        with _disk_refusal(request.output.folder):
            files = claim_files(request.output.folder, request.method.seed, request.output.path)
            run = cls(request, files, continuation)
            pixels = crop_to_bucket(request.image, request.method.resolution)
            Image.fromarray(pixels).save(files.picture)
            if request.end_image is not None:
                height, width = pixels.shape[:2]
                Image.fromarray(resize_and_center_crop(request.end_image, width, height)).save(files.end_picture)
            for number, (picture, _, _) in enumerate(request.keyframes, 1):
                height, width = pixels.shape[:2]  # every picture at the start picture's size, as the model sees it
                Image.fromarray(resize_and_center_crop(picture, width, height)).save(files.keyframe(number))
            files.write_record(run.record())
        return run

    def stop(self) -> None:
        self.cancel.set()

    def refuse(self, message: str) -> None:
        """The run will not be made (e.g. another is going): its record says why."""
        self.outcome = Failed(message)
        self.files.write_record(self.record())

    def execute(self, session, emit: Callable[[Event], None], make_video: Callable | None = None) -> Finished | Failed:
        """Make the video. Every failure ends this run only, as a Failed event and a failed record.

        `make_video` is generation.make_video; tests hand in a scripted stand-in.
        """
        from .generation import (
            Progress,  # the model libraries, only when a video is made
        )

        options = {"continuation": self.continuation} if self.continuation is not None else {}
        if make_video is None:
            from .generation import make_video

            options["latents"] = self.files.latents

        started = time.monotonic()
        progress = Progress()
        manager = None
        try:
            models, manager = session.prepare(self.request, emit)
            if self.cancel.is_set():
                raise Cancelled()
            make_video(self.request, models, manager, self.files.in_progress, self.metadata(), emit, self.cancel,
                       progress, **options)
            outcome = self._finish(progress, started, stopped=False)
        except Cancelled:
            outcome = self._finish(progress, started, stopped=True)
        except Exception as error:
            # The traceback travels in the event (`detail`) for logs; users read the one sentence.
            log.info("generation failed", exc_info=True)
            partial = self.files.in_progress if self.files.in_progress.exists() else None
            outcome = Failed(user_message(error, self.files.folder), traceback.format_exc(), partial_video=partial)
        finally:
            session.release(manager)
        self.outcome = outcome
        self.files.try_write_record(self.record())  # a full disk must not hide the outcome's message
        emit(outcome)
        return outcome

    def metadata(self) -> dict:
        """What the MP4's metadata keeps: everything that made the video, so it can be made again."""
        return {"app": APP} | self.request.settings()

    def record(self) -> dict:
        """The run's record: settings and status, as the JSON file, summaries and the API give it."""
        request, files, outcome = self.request, self.files, self.outcome
        record = {"app": APP, "created": self.created, "model": request.model, "input": files.picture.name,
                  "input_name": request.image_name,
                  "end_frame": files.end_picture.name if request.end_image is not None else None,
                  "keyframe_pictures": [files.keyframe(n).name for n in range(1, len(request.keyframes) + 1)],
                  "video": files.video.name, "settings": request.settings(), "status": "running"}
        if outcome is None:  # who makes it: a record whose process is gone is marked when next read
            record["owner"] = this_process()
        if isinstance(outcome, Failed):
            partial = outcome.partial_video.name if outcome.partial_video else None
            record |= {"status": "failed", "error": outcome.message, "video": None, "partial_video": partial}
        elif isinstance(outcome, Finished):
            total = outcome.blocks_computed + outcome.blocks_skipped
            cache = {"enabled": bool(outcome.step_cache)}
            if outcome.step_cache:
                cache |= {"method": outcome.step_cache, "threshold": request.speed.cache_threshold,
                          "blocks_computed": outcome.blocks_computed, "blocks_skipped": outcome.blocks_skipped,
                          "speedup": round(total / outcome.blocks_computed, 3) if outcome.blocks_computed else None}
            record |= {"status": "stopped" if outcome.stopped else "finished",
                       "video": files.video.name if outcome.video else None,
                       "frames": outcome.frames, "fps": outcome.fps, "sections": outcome.sections,
                       "width": outcome.width, "height": outcome.height, "seed": outcome.seed,
                       "seconds_elapsed": round(outcome.seconds_elapsed, 3), "stopped": outcome.stopped,
                       "attention": outcome.attention, "vae_tiling": outcome.vae_tiling, "fp8": outcome.fp8,
                       "step_cache": cache}
        return record

    def _finish(self, progress, started: float, stopped: bool) -> Finished:
        video = None
        if progress.sections_done and self.files.in_progress.exists():
            os.replace(self.files.in_progress, self.files.video)
            video = self.files.video
        cache = progress.cache
        fps, width, height = FPS, progress.width, progress.height
        if self.continuation is not None and self.continuation.extends and progress.sections_done:
            facts = self.continuation.facts  # the new frames join the source's stream, at its size and rate
            fps, width, height = facts.fps, facts.width, facts.height
        return Finished(video, progress.frames, fps, progress.sections_done, width, height,
                        self.request.method.seed, time.monotonic() - started, stopped, attention=progress.attention,
                        vae_tiling=progress.vae_tiling, fp8=progress.fp8,
                        step_cache=cache.method if cache else "", blocks_computed=cache.computed if cache else 0,
                        blocks_skipped=cache.skipped if cache else 0)


@contextmanager
def _disk_refusal(folder):
    """A full disk or a read-only folder before the run begins: one sentence (ValueError), like bad input."""
    try:
        yield
    except OSError as error:
        message = disk_message(error, folder)
        if message is None:
            raise
        raise ValueError(message) from error


def _check_writable(folder) -> None:
    """Refuse an output folder we could not write, before any model is loaded."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"The output folder {str(folder)!r} lies inside {str(parent)!r}, which is a file.")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"The folder {str(parent)!r} is not writable.")
            return

