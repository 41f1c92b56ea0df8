"""What the starts that continue a video share (an extension, a branch, a bridge): whether its frames can be
copied, its saved latents when this app made it, its settings and prompt, and the size it is worked at.

A video this app made keeps its latents and settings beside it (NAME.safetensors, NAME.json), or in its
MP4's metadata; any other video (H.264, yuv420p) is worked at its own size, each side to a multiple of 16,
and must be told what happens next (a prompt).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..media.latents import SavedLatents, load_latents
from ..media.video_files import VideoFacts, probe_video
from ..run.files import files_of
from ..run.mp4_tags import metadata_settings
from ..settings import DEFAULTS, MAX_RESOLUTION, MIN_RESOLUTION, SETTINGS, SamplingMode, canonical_name


@dataclass(frozen=True)
class Source:
    """A video a continuing start reads, as it reads it."""
    path: Path  # resolved
    facts: VideoFacts  # its stream
    saved: SavedLatents | None  # its latents, when this app made it (own_latents)
    settings: dict  # its own settings, then those given, and where the new MP4 goes (continued_settings)


def read_source(path, what: str, start: str, mode: SamplingMode, given: dict, folder, output, from_start: bool = False,
                whole: bool = False) -> Source:
    """The video at `path` as a start that continues it reads it (`what` it is: "extended", "bridged"; `start`:
    the start's words, its sampling `mode`); ValueError (one sentence) for a video whose frames cannot be
    copied, or a setting given that the start cannot honour. `from_start`, `whole`: as for `read_clip`."""
    source = Path(path)
    facts, saved = read_clip(source, what, from_start, whole)
    refuse_unhonoured(given, start, mode, saved)
    return Source(source.resolve(), facts, saved, continued_settings(source, facts, saved, given, folder, output))


def read_clip(source: Path, what: str, from_start: bool = False, whole: bool = False):
    """(its stream's facts, its saved latents or None) of a video whose frames are copied into a new one
    (own_latents: `from_start`); `whole`: a run of this app's stopped before its end is refused."""
    facts = copyable_video(source, what)
    files = files_of(source)
    if whole and files.latents.exists() and source.resolve() == files.video.resolve() and not load_latents(
            files.latents).complete:
        raise ValueError(f"{source.name} was stopped before its end; resume it first (--resume).")
    return facts, own_latents(source, facts, from_start)


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


def refuse_unhonoured(overrides: dict, what: str, mode: SamplingMode, saved) -> None:
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
    from ..setting_values import job_fields

    made_here = job_fields(saved.settings if saved else metadata_settings(source))
    settings = made_here | {canonical_name(k): v for k, v in overrides.items() if v is not None}
    if saved is not None:  # the saved latents fix the frame size
        settings["resolution"] = saved.settings["resolution"]
    else:
        settings = foreign_settings(settings, facts, source.name, bool(made_here) or bool(overrides.get("prompt")))
        # The new frames must join the source's stream: High profile (CRF 0 would switch to High 4:4:4).
        settings["crf"] = max(1, int(settings.get("crf", DEFAULTS["crf"])))
    return settings | ({"path": Path(output)} if output else {"folder": Path(folder) if folder else source.parent})


def prompt_clock(saved, frame: int, fps: float) -> float:
    """Frame `frame` of a video as the time its own prompt's timeline gives it: an extension's prompt counts
    from the start of its new part (its saved latents say how many frames came before)."""
    before = saved.extends.get("frames", 0) if saved is not None and "video" in saved.extends else 0
    return (frame - before) / fps


def foreign_settings(settings: dict, facts, source_name: str, prompt_given: bool) -> dict:
    """A video not made here: it must be told what happens next, and it works at its own size, or at the
    run's resolution when it is bigger (working_size)."""
    if not prompt_given and not settings.get("prompt"):
        raise ValueError(f"{source_name} was not made here, so it has no prompt to continue from; say what happens "
                         "next with --prompt (on the page: the prompt box).")
    width, height = (to_16(side) for side in (facts.width, facts.height))
    # The bucket whose area is the working size's (resolution R: about R x R pixels), within the valid range.
    own = min(MAX_RESOLUTION, max(MIN_RESOLUTION, math.ceil(math.sqrt(width * height))))  # own area fits it
    return settings | {"resolution": min(own, int(settings.get("resolution") or DEFAULTS["resolution"]))}


def working_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The size a video from elsewhere is worked at: its own, each side rounded to 16, unless that holds more
    pixels than the run's resolution bucket (about resolution x resolution): then scaled down to that area, its
    shape kept (a 4K or phone clip would otherwise cost gigabytes for nothing the run asked for)."""
    own = (to_16(width), to_16(height))
    if own[0] * own[1] <= resolution * resolution:
        return own
    scale = resolution / (width * height) ** 0.5
    return to_16(width * scale), to_16(height * scale)


def to_16(side: float) -> int:
    """A side the model takes: the nearest multiple of 16, at least 16."""
    return max(16, round(side / 16) * 16)


def frames_of_latents(latent_frames: int) -> int:
    return 4 * (latent_frames - 1) + 1


def to_size(pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Decoded frames (1, 3, T, h, w) scaled to width x height (as they are when already that size)."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    frames = pixels[0].permute(1, 0, 2, 3)  # (T, 3, h, w): frames as a batch
    scaled = torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", antialias=True,
                                             align_corners=False)
    return scaled.permute(1, 0, 2, 3).unsqueeze(0).clamp(-1, 1)


def resized(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.LANCZOS))


