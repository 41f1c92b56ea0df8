"""Resuming a stopped, failed or killed run, under its own name and files.

    run = begin(Resume(path))    # NAME.mp4, NAME.in-progress.mp4, NAME.json or its latents

A resumed run samples only the sections its saved latents lack, and makes the same MP4 as the run that
never stopped; it starts as it first started (a picture, the video it extends, the clips it bridges: the
kind's `recalled` reads that back from the latents file). A run killed before its first section's latents
were saved (while its models loaded, say) has its picture and its record, with every setting, but no
latents: it is made again from the start, same name and seed (its record's `continues` says how it began),
so the video is the one it would have made.

A queued job resumes the same way, and when there is nothing usable to resume from, starts again
(`otherwise`): a job never leaves two videos.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.beginning import Beginning, Origin
from ..events import Status
from ..media.latents import SavedLatents, load_latents
from ..media.video_files import VideoFacts
from ..run.files import RunFiles, files_of, remove_dead_scratch, status_and_owner
from ..run.owner import owner_alive, owner_words
from ..run.record import RunRecord
from .kinds import recalled


@dataclass(frozen=True)
class Resume:
    """The start a front end builds to resume the run `path` belongs to; `otherwise` (a queued job's own
    start) is taken instead when the run left nothing usable to resume from."""
    path: str | Path
    otherwise: object | None = None

    def parts(self):
        if self.otherwise is None:
            return resume_parts(self.path)
        if not files_of(Path(self.path)).latents.exists():
            return self.otherwise.parts()
        try:
            return resume_parts(self.path)
        except ValueError:  # nothing usable to resume from: made again from the start
            return self.otherwise.parts()


@dataclass(frozen=True)
class ResumedRun(Origin):
    """A stopped, failed or killed run, from its saved latents: only the sections it lacks are sampled."""
    saved: SavedLatents
    origin: Origin  # how the run first started (its picture, the video it extends, the clips it bridges)
    # What the first start says of itself in the record, read once as the run resumes.
    first_described: dict = field(init=False, repr=False, compare=False)
    first_restarts: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "first_described", self.origin.described())
        object.__setattr__(self, "first_restarts", self.origin.restarts())

    def begin(self, request, models, manager) -> Beginning:
        return self.origin.resumed(self.saved, request, models, manager)

    def described(self) -> dict:
        return self.first_described

    def restarts(self) -> dict:
        return self.first_restarts

    def reads(self) -> tuple[Path, ...]:
        return self.origin.reads()

    def stream(self) -> VideoFacts | None:
        return self.origin.stream()


def resume_parts(path) -> tuple:
    """(request, origin, files) of the run that `path` belongs to, resumed from its last saved section, or
    made again from its start when it saved none. ValueError (one sentence) when there is nothing to resume."""
    files = files_of(Path(path))
    status = check_resumable(files)  # also clears the folder's scratch files of ended runs
    if not files.latents.exists():  # ended before its first section was saved: made again from the start
        record = _record(files)
        if record is None:
            raise ValueError(f"Nothing to resume for {files.name!r} in {str(files.folder)!r}: there is no record of "
                             "its settings and no saved latents.")
        finished = status == Status.FINISHED
        request = _remade(files, record.settings, bool(record.end_frame), finished, "make it again")
        continues = record.continues
        return request, recalled(continues if isinstance(continues, dict) else {}), files  # as it first started
    saved = load_latents(files.latents)
    finished = saved.complete and status == Status.FINISHED
    request = _remade(files, saved.settings, bool(saved.settings.get("end_image")), finished, "resume")
    return request, ResumedRun(saved, recalled(saved.extends)), files


def check_resumable(files: RunFiles) -> str:
    """The run's status as its record says. ValueError when another process is still making it (any record that
    names a live owner, even one this version cannot otherwise read). Clears the scratch files of ended runs in its
    folder (a killed run's record is marked failed as it is read)."""
    status, owner = status_and_owner(files)
    if owner is not None and owner_alive(owner) and owner.get("pid") != os.getpid():
        raise ValueError(f"{files.name!r} is still being made ({owner_words(owner)}); stop it there first.")
    remove_dead_scratch(files.folder)
    return status


def _remade(files: RunFiles, settings: dict, has_end: bool, finished: bool, why: str):
    """The request that makes the run as it was asked for, under its own name: its settings, its picture,
    end frame and keyframes (kept as files beside it)."""
    from ..request import Request
    from ..setting_values import job_fields

    if finished and files.video.exists():
        raise ValueError(f"{files.video.name} is finished; use --extend to make it longer.")
    if not files.picture.exists():
        raise ValueError(f"The run's picture {str(files.picture)!r} is missing; it is needed to {why}.")
    keyframes = [(files.keyframe(number), key["seconds"], key["weight"])
                 for number, key in enumerate(settings.get("keyframes") or (), 1)]
    request = Request.from_fields(image=files.picture, end_image=files.end_picture if has_end else None,
                                  keyframes=keyframes, path=files.video, **job_fields(settings))
    return request.validated()


def _record(files: RunFiles) -> RunRecord | None:
    """The run's record; None when there is none this version can read."""
    try:
        return RunRecord.from_json(files.read_record())
    except (OSError, ValueError):
        return None
