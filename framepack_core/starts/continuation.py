"""Runs that do not start from a picture alone: resuming a stopped run, extending a finished video.

    run = Run.resume(path)                       # NAME.mp4, NAME.in-progress.mp4, NAME.json or its latents
    run = Run.extend(path, seconds=2, prompt=…)  # any MP4; with saved latents beside it, those are used
    run = Run.extend(path, seconds=2, from_seconds=3.5)  # a branch: its frames up to 3.5 s, then new ones
    run.execute(session, emit)                   # as any run

(run.py's Run.resume / Run.extend build the runs from `resume_parts` / `extension_parts` here; each
gives the run its origin, origins.py: how the run starts.)

A resumed run keeps its name and files, samples only the sections its saved latents lack, and
makes the same MP4 as the run that never stopped. An extension is a new run (new name) whose
video is the source's frames, untouched, then the new ones, sampled forward from the source's
latents (its saved ones, or its last frames encoded by the VAE). A branch is an extension of the
source's first part: cut at the source's cut point nearest the time asked (a keyframe, so the frames
before it are copied, bit for bit), into a new file; the source is never changed.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

from ..events import Status
from ..media.latents import load_latents
from .extension import frames_of_latents
from ..media.video_files import cut_points, first_frame, probe_video
from ..method.prompts import continued_prompt
from .new_part import check_timed_prompt, foreign_settings, new_part
from ..run.files import files_of
from .source_check import trusted_source
from .run_restart import check_resumable, restart_of, start_over
from ..settings import DEFAULTS, SETTINGS, canonical_name

def resume_parts(path) -> tuple:
    """(request, files, origin) of the stopped, failed or killed run that `path` belongs to, the origin
    an origins.ResumedRun; `Run.resume` makes the run. Raises ValueError (one sentence) when there is
    nothing to resume.
    """
    from .origins import ResumedRun
    from ..request import Request, job_fields

    files = files_of(Path(path))
    status = check_resumable(files)  # also marks a killed run's record and clears its scratch files
    if not files.latents.exists():  # ended before its first section was saved: made again from the start
        request, files = start_over(files, job_fields)
        continues = restart_of(files)  # a continued run starts over as the same kind of run
        return request, files, first_origin(continues) if continues else None
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
    return request, files, ResumedRun(saved, first_origin(saved.extends))


def first_origin(extends: dict):
    """How a run whose latents record `extends` first started (origins.py): the clips it bridges, the
    video it extends or branches, else its picture."""
    from .origins import BridgedClips, Clip, ExtendedVideo, NewPicture

    if "bridge" in extends:
        digests = extends.get("bridge_sha256") or (None, None)
        first, second = (trusted_source(path, digest, "a clip this bridge joins")
                         for path, digest in zip(extends["bridge"], digests))
        return BridgedClips(Clip(first, probe_video(first), own_latents(first)),
                            Clip(second, probe_video(second), own_latents(second, from_start=True)))
    if extends:
        source = trusted_source(extends["video"], extends.get("sha256"), "the video this run extends")
        facts = probe_video(source)
        cut = extends["frames"] if extends.get("cut") else None
        return ExtendedVideo(source, facts, own_latents(source, facts, from_start=cut is not None),
                             extends.get("new_frames"), cut)
    return NewPicture()


def own_latents(video: Path, facts=None, from_start: bool = False):
    """The saved latents of a finished video this app made, when they end where its frames end; else
    None (a video from elsewhere; a bridge, whose second clip follows its latents; one whose last section
    was cut: its latents run past its end).
    `from_start`: only when they also begin at its first frame (not an extension of a video from elsewhere,
    whose latents begin with that video's last frames encoded), so frame k's latent can be found."""
    files = files_of(video)
    if not files.latents.exists() or video.resolve() != files.video.resolve():
        return None
    saved = load_latents(files.latents)
    # A bridge's latents are its middle (the second clip's frames follow them); a cut last section's run past.
    if not saved.complete or saved.extends.get("new_frames") or "bridge" in saved.extends:
        return None
    if from_start and (facts or probe_video(video)).frames != frames_of_latents(saved.video.shape[2]):
        return None
    return saved


def extension_parts(path, seconds: float, folder: Path | None = None, output: Path | None = None,
                    from_seconds: float | None = None, **overrides) -> tuple:
    """(request, origin) of a new run that continues the video at `path` by `seconds`, sampling
    forward; `Run.extend` starts it. `from_seconds`: a branch, continuing from that moment instead of
    the end (the source's nearest cut point).

    Settings come from the source's saved latents (or its MP4 metadata, or defaults), then
    `overrides` (flat request fields, e.g. prompt=…, model=…, seed=…).
    """
    from PIL import Image

    from .origins import ExtendedVideo
    from ..request import Request, check_value

    seconds = check_value(SETTINGS["seconds"], seconds)  # the table's range, before any arithmetic on it
    source = Path(path)
    facts = copyable_video(source, "extended")
    files = files_of(source)
    if files.latents.exists() and source.resolve() == files.video.resolve() and not load_latents(files.latents).complete:
        raise ValueError(f"{source.name} was stopped before its end; resume it first (--resume).")
    cut = None if from_seconds is None else branch_cut(source, facts, from_seconds)
    saved = own_latents(source, facts, from_start=cut is not None)
    refuse_unhonoured(overrides, "A branch (--extend with --from)" if cut is not None else "An extension (--extend)",
                      "forward", saved)
    settings = continued_settings(source, facts, saved, overrides, folder, output)
    window = int(settings.get("window") or DEFAULTS["window"])
    part = new_part(seconds, facts.fps, window)
    settings |= {"seconds": part.seconds, "mode": "forward"}
    if not overrides.get("prompt"):  # the source's own timed prompts, on the new part's timeline
        begins = prompt_clock(saved, facts.frames if cut is None else cut, facts.fps)
        settings["prompt"] = continued_prompt(settings.get("prompt") or "", begins, part.seconds, window)
    settings.pop("end_image", None)
    settings.pop("loop", None)  # forward sampling continues the video; it aims at no end frame
    check_timed_prompt(settings, facts if cut is None else replace(facts, frames=cut))
    image = files.picture if saved and files.picture.exists() else first_frame(source)
    request = Request.from_fields(image=image if isinstance(image, Image.Image) else Path(image),
                                  image_name=source.name, **settings)
    return request, ExtendedVideo(source.resolve(), facts, saved, part.frames, cut)


def prompt_clock(saved, frame: int, fps: float) -> float:
    """Frame `frame` of a video as the time its own prompt's timeline gives it: an extension's prompt counts
    from the start of its new part (its saved latents say how many frames came before)."""
    before = saved.extends.get("frames", 0) if saved is not None and "video" in saved.extends else 0
    return (frame - before) / fps


def refuse_unhonoured(overrides: dict, what: str, mode: str, saved) -> None:
    """A setting a continuation decides itself, given anyway, is refused in one sentence, never dropped: its
    start is the source's frames (no picture, end frame, keyframes or loop), its sampling order is `mode`,
    and saved latents fix its resolution."""
    given = {canonical_name(k): v for k, v in overrides.items() if v not in (None, False, "", (), [])}
    refused = [SETTINGS[name].flag or name for name in ("image", "end_image", "keyframes", "loop") if name in given]
    if given.get("mode") not in (None, mode):
        refused.append(f"--mode {given['mode']} (it is sampled {mode})")
    if saved is not None and given.get("resolution") not in (None, saved.settings["resolution"]):
        refused.append(f"--resolution {given['resolution']} (its saved latents are at {saved.settings['resolution']})")
    if refused:
        raise ValueError(f"{what} cannot honour {', '.join(refused)}; leave {'it' if len(refused) == 1 else 'them'} "
                         "out.")


def continued_settings(source: Path, facts, saved, overrides: dict, folder, output) -> dict:
    """The settings of a run that continues `source` (an extension, a branch, a bridge from it): its own
    (from its saved latents, else its MP4's metadata), then `overrides`, and where the new MP4 goes. A
    video from elsewhere works at its own size, needs a prompt, and gets a CRF its stream can join."""
    from ..request import job_fields

    made_here = job_fields(saved.settings if saved else metadata_settings(source))
    settings = made_here | {canonical_name(k): v for k, v in overrides.items() if v is not None}
    if saved is not None:  # the saved latents fix the frame size
        settings["resolution"] = saved.settings["resolution"]
    else:
        settings = foreign_settings(settings, facts, source.name, bool(made_here) or bool(overrides.get("prompt")))
        # The new frames must join the source's stream: High profile (CRF 0 would switch to High 4:4:4).
        settings["crf"] = max(1, int(settings.get("crf", DEFAULTS["crf"])))
    return settings | ({"path": Path(output)} if output else {"folder": Path(folder) if folder else source.parent})


def copyable_video(source: Path, what: str):
    """The stream's facts of a video whose frames can be copied into a new one (H.264 as this app writes
    it); ValueError (one sentence) otherwise."""
    if not source.is_file():
        raise ValueError(f"There is no video at {str(source)!r}.")
    facts = probe_video(source)
    if facts.codec != "h264" or facts.pix_fmt != "yuv420p" or facts.profile not in ("High", "Main"):
        raise ValueError(f"{source.name} is {facts.codec} {facts.profile} {facts.pix_fmt}; only H.264 (Main or High "
                         f"profile, yuv420p) videos can be {what} without re-encoding them.")
    return facts


def branch_cut(source: Path, facts, seconds: float) -> int:
    """The frame a branch of `source` at `seconds` keeps the frames before: the stream's cut point nearest
    it when one lies within SNAP_SECONDS (the frames before it are copied, bit for bit), else the frame at
    that time (the frames before it are encoded again). ValueError (one sentence) for a time outside it."""
    if facts.frames < 2:
        raise ValueError(f"{source.name} has one frame; a branch keeps some of a video's frames, so it needs two or "
                         "more (extend it instead).")
    length = facts.frames / facts.fps
    if not 0 < seconds < length:
        raise ValueError(f"A branch starts inside {source.name}: after 0 s and before its end at {length:.2f} s, "
                         f"not at {seconds:g} s.")
    wanted = seconds * facts.fps
    points = [point for point in cut_points(source)
              if 0 < point < facts.frames and abs(point - wanted) <= SNAP_SECONDS * facts.fps]
    if points:
        return min(points, key=lambda point: (abs(point - wanted), point))
    return min(max(1, round(wanted)), facts.frames - 1)


# How far a branch moves to a keyframe to keep its frames bit for bit. A video made here has one where each
# segment it wrote begins: forward, about every section (1.2 s at the default window); inverted, only near its
# end (README, --from), so a branch of it early on is encoded again.
SNAP_SECONDS = 1.0


def metadata_settings(path: Path) -> dict:
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
