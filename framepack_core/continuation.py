"""Runs that do not start from a picture alone: resuming a stopped run, extending a finished video.

    run = Run.resume(path)                       # NAME.mp4, NAME.in-progress.mp4, NAME.json or its latents
    run = Run.extend(path, seconds=2, prompt=…)  # any MP4; with saved latents beside it, those are used
    run.execute(session, emit)                   # as any run

(run.py's Run.resume / Run.extend build the runs from `resume_parts` / `extension_parts` here; each
gives the run its origin, origins.py: how the run starts.)

A resumed run keeps its name and files, samples only the sections its saved latents lack, and
makes the same MP4 as the run that never stopped. An extension is a new run (new name) whose
video is the source's frames, untouched, then the new ones, sampled forward from the source's
latents (its saved ones, or its last frames encoded by the VAE).
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from .events import Status
from .media.latents import load_latents
from .media.video_files import first_frame, probe_video
from .new_part import check_timed_prompt, foreign_settings, new_part
from .run_files import files_of
from .run_restart import check_resumable, start_over
from .settings import DEFAULTS, canonical_name

def resume_parts(path) -> tuple:
    """(request, files, origin) of the stopped, failed or killed run that `path` belongs to, the origin
    an origins.ResumedRun; `Run.resume` makes the run. Raises ValueError (one sentence) when there is
    nothing to resume.
    """
    from .origins import ExtendedVideo, NewPicture, ResumedRun
    from .request import Request, job_fields

    files = files_of(Path(path))
    status = check_resumable(files)  # also marks a killed run's record and clears its scratch files
    if not files.latents.exists():  # ended before its first section was saved: made again from the start
        return start_over(files, job_fields) + (None,)
    saved = load_latents(files.latents)
    if saved.complete and files.video.exists() and status == Status.FINISHED:
        raise ValueError(f"{files.video.name} is finished; use --extend to make it longer.")
    if not files.picture.exists():
        raise ValueError(f"The run's picture {str(files.picture)!r} is missing; it is needed to resume.")
    settings = job_fields(saved.settings)
    end = files.end_picture if saved.settings.get("end_image") else None
    keyframes = [(files.keyframe(number), key["seconds"], key["weight"])
                 for number, key in enumerate(saved.settings.get("keyframes") or (), 1)]
    request = Request.from_fields(image=files.picture, end_image=end, keyframes=keyframes, path=files.video,
                                  **settings)
    request = request.validated()
    origin = NewPicture()
    if saved.extends:
        source = Path(saved.extends["video"])
        if not source.exists():
            raise ValueError(f"The video this run extends, {str(source)!r}, is missing.")
        beside = files_of(source)
        source_latents = None
        if beside.latents.exists() and source == beside.video.resolve():
            source_latents = load_latents(beside.latents)
        origin = ExtendedVideo(source, probe_video(source), source_latents, saved.extends.get("new_frames"))
    return request, files, ResumedRun(saved, origin)


def extension_parts(path, seconds: float, folder: Path | None = None, output: Path | None = None,
                    **overrides) -> tuple:
    """(request, origin) of a new run that continues the video at `path` by `seconds`, sampling
    forward; `Run.extend` starts it.

    Settings come from the source's saved latents (or its MP4 metadata, or defaults), then
    `overrides` (flat request fields, e.g. prompt=…, model=…, seed=…).
    """
    from PIL import Image

    from .origins import ExtendedVideo
    from .request import Request, job_fields

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"There is no video at {str(source)!r}.")
    facts = probe_video(source)
    if facts.codec != "h264" or facts.pix_fmt != "yuv420p" or facts.profile not in ("High", "Main"):
        raise ValueError(f"{source.name} is {facts.codec} {facts.profile} {facts.pix_fmt}; only H.264 (Main or High "
                         "profile, yuv420p) videos can be extended without re-encoding them.")
    files = files_of(source)
    saved = load_latents(files.latents) if files.latents.exists() and source == files.video else None
    if saved is not None and not saved.complete:
        raise ValueError(f"{source.name} was stopped before its end; resume it first (--resume).")
    if saved is not None and saved.extends.get("new_frames"):
        saved = None  # its last frames were cut from its last section: its latents run past its end
    made_here = job_fields(saved.settings if saved else _metadata_settings(source))
    settings = made_here | {canonical_name(k): v for k, v in overrides.items() if v is not None}
    if saved is not None:  # the saved latents fix the frame size
        settings["resolution"] = saved.settings["resolution"]
    else:
        settings = foreign_settings(settings, facts, source.name, bool(made_here) or bool(overrides.get("prompt")))
    part = new_part(seconds, facts.fps, int(settings.get("window") or DEFAULTS["window"]))
    settings |= {"seconds": part.seconds, "mode": "forward"}
    settings.pop("end_image", None)
    settings.pop("loop", None)  # forward sampling continues the video; it aims at no end frame
    check_timed_prompt(settings, facts)
    image = files.picture if saved and files.picture.exists() else first_frame(source)
    if saved is None:
        # The new part must join the source's stream: High profile (CRF 0 would switch to High 4:4:4).
        settings["crf"] = max(1, int(settings.get("crf", DEFAULTS["crf"])))
    where = {"path": Path(output)} if output else {"folder": Path(folder) if folder else source.parent}
    request = Request.from_fields(image=image if isinstance(image, Image.Image) else Path(image),
                                  image_name=source.name, **settings, **where)
    return request, ExtendedVideo(source.resolve(), facts, saved, part.frames)


def _metadata_settings(path: Path) -> dict:
    """Settings from an MP4 this app made (its comment tag); {} for any other video."""
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("comment="):
            try:
                settings = json.loads(re.sub(r"\\(.)", r"\1", line[len("comment="):]))
            except ValueError:
                return {}
            return settings if isinstance(settings, dict) and settings.get("app") else {}
    return {}
