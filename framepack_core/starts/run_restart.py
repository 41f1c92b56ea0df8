"""Before a run is resumed: is it free to resume (its process gone), and, when it ended before its
first section's latents were saved, the request that makes it again from the start under its name.

A run killed while its models loaded (or while it encoded the prompt and picture) has its picture
and its record (with every setting) but no latents yet: it is made again, same name, same seed, so
the video is the one it would have made.
"""
from __future__ import annotations

import os
from typing import Callable

from ..events import Status
from ..run.record_shape import record_problem
from ..run.files import RunFiles, remove_dead_scratch
from ..run.owner import owner_alive, owner_words


def check_resumable(files: RunFiles) -> str:
    """The run's status as its record says (a killed run's is marked failed here). ValueError when another
    process is still making it. Clears the scratch files of ended runs in its folder."""
    record = _record(files)
    owner = record.get("owner") or {}
    if record.get("status") == Status.RUNNING and owner_alive(owner) and owner.get("pid") != os.getpid():
        raise ValueError(f"{files.name!r} is still being made ({owner_words(owner)}); stop it there first.")
    remove_dead_scratch(files.folder)
    return record.get("status", "")


def start_over(files: RunFiles, fields: Callable[[dict], dict]):
    """(request, files): the run as its record asked for it, to be made from the start under the same name.
    `fields` keeps only the names a request takes."""
    from ..request import Request

    record = _record(files)
    record = record if record_problem(record) is None else {}  # a record this version cannot read: none
    settings = record.get("settings")
    if not isinstance(settings, dict):
        raise ValueError(f"Nothing to resume for {files.name!r} in {str(files.folder)!r}: there is no record of "
                         "its settings and no saved latents.")
    if record.get("status") == Status.FINISHED and files.video.exists():
        raise ValueError(f"{files.video.name} is finished; use --extend to make it longer.")
    if not files.picture.exists():
        raise ValueError(f"The run's picture {str(files.picture)!r} is missing; it is needed to make it again.")
    end = files.end_picture if record.get("end_frame") else None
    keyframes = [(files.keyframe(number), key["seconds"], key["weight"])
                 for number, key in enumerate(settings.get("keyframes") or (), 1)]
    request = Request.from_fields(image=files.picture, end_image=end, keyframes=keyframes, path=files.video,
                                  **fields(settings))
    return request.validated(), files


def restart_of(files: RunFiles) -> dict:
    """The start a continued run (extension, branch, bridge) records for starting over (origins.restarts);
    {} for a run from a picture."""
    continues = _record(files).get("continues")
    return continues if isinstance(continues, dict) else {}


def _record(files: RunFiles) -> dict:
    try:
        return files.read_record()
    except (OSError, ValueError):
        return {}
