"""A bridge: the seconds that lead from one clip's last frame into another's first, written as the
first clip, the bridge, then the second clip, both clips copied as they are (never re-encoded).

    run = begin(Bridge("a.mp4", "b.mp4", seconds=2))   # a new run and file; a.mp4 and b.mp4 are unchanged

Sampled inverted (BridgedClips): the first clip's last latent frame is the start (from its saved latents
where this app made it, else its last frame encoded by the VAE), the second clip's first frame the end
frame. The clips must share a size and frame rate (one stream). Settings come from the first clip (its
saved latents, else its MP4's metadata), then the ones given; a pair of clips not made here needs a prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.beginning import Beginning, Origin
from ..media.latents import SavedLatents
from ..media.segments import Copied
from ..media.video_files import VideoFacts, first_frame, last_frames, probe_video
from ..method.prompts import continued_prompt
from ..method.sections import SavedSections, SectionSettings
from ..models.encoders import encode_latent, set_vae_tiling
from ..run.same_file import same_file
from ..settings import DEFAULTS, FPS, SETTINGS, SamplingMode
from .continued import own_latents, prompt_clock, read_clip, read_source, resized, to_size, working_size
from .source_check import source_digest, trusted_source


class Bridge:
    """The start a front end builds to bridge clip `first` into clip `second` with about `seconds` of new
    frames. `settings`: flat request fields given (prompt=…, seed=…) over the first clip's own."""

    def __init__(self, first, second, seconds: float, folder: Path | None = None, output: Path | None = None,
                 **settings):
        self.first, self.second, self.seconds = first, second, seconds
        self.folder, self.output, self.settings = folder, output, settings

    def parts(self):
        request, origin = bridge_parts(self.first, self.second, self.seconds, self.folder, self.output,
                                       **self.settings)
        return request, origin, None


def bridge_parts(first, second, seconds: float, folder: Path | None = None, output: Path | None = None,
                 **given) -> tuple:
    """(request, origin) of the run that bridges clip `first` into clip `second` (`Bridge.parts`). ValueError
    (one sentence) for bad input, before anything is written."""
    from PIL import Image

    from ..request import Request
    from ..setting_values import check_value

    seconds = check_value(SETTINGS["seconds"], seconds)  # the table's range, before any arithmetic on it
    if same_file(first, second):  # by identity: a hard link or another spelling of one clip too
        raise ValueError("A bridge joins two different clips; for a video that leads back into its own start, "
                         "use --loop.")
    clip = read_source(first, "bridged", "A bridge (--bridge)", SamplingMode.INVERTED, given, folder,
                       output)
    b, into = read_clip(Path(second), "bridged", from_start=True)
    a = clip.facts
    if (a.width, a.height) != (b.width, b.height) or abs(a.fps - b.fps) > 0.01:
        raise ValueError(f"{Path(first).name} is {a.width}x{a.height} at {a.fps:g} fps and {Path(second).name} is "
                         f"{b.width}x{b.height} at {b.fps:g} fps; a bridge joins clips of the same size and frame "
                         "rate.")
    window = int(clip.settings.get("window") or DEFAULTS["window"])
    length = bridge_seconds(seconds, a.fps, window)
    prompt = clip.settings.get("prompt") or ""
    if not given.get("prompt"):  # the first clip's own timed prompts, on the bridge's timeline
        prompt = continued_prompt(prompt, prompt_clock(clip.saved, a.frames, a.fps), length, window)
    settings = dict(clip.settings)
    for fixed in ("end_image", "loop", "keyframes"):  # the second clip is the end, the first the start
        settings.pop(fixed, None)
    settings |= {"seconds": length, "mode": SamplingMode.INVERTED, "prompt": prompt}
    request = Request.from_fields(image=Image.fromarray(last_frames(clip.path, 1)[0]), image_name=Path(first).name,
                                  **settings).validated()
    second = Path(second).resolve()
    return request, BridgedClips(Clip(clip.path, a, clip.saved, source_digest(clip.path)),
                                 Clip(second, b, into, source_digest(second)))


def bridge_seconds(seconds: float, fps: float, window: int) -> float:
    """The request's seconds for a bridge of about `seconds` at the clips' frame rate: the whole sections
    (4 x window frames each, at least one) nearest it, counted as the model counts them (30 fps)."""
    if seconds <= 0:
        raise ValueError(f"A bridge lasts more than 0 seconds, not {seconds:g}.")
    sections = max(1, round(seconds * fps / (4 * window)))
    return sections * 4 * window / FPS


@dataclass(frozen=True)
class Clip:
    """A video a bridge joins, copied as it is: its stream and, when this app made it, its latents."""
    path: Path
    facts: VideoFacts
    latents: SavedLatents | None = None
    digest: str = ""  # its SHA-256 as the run starts: its record and latents name that very file


@dataclass(frozen=True)
class BridgedClips(Origin):
    """The frames that lead from `first`'s last frame into `second`'s first, sampled inverted: the
    first clip's last latent frame is the start (its saved one, else its last frame encoded), the
    second's first frame the end frame (its saved latent, else encoded)."""
    first: Clip
    second: Clip

    @classmethod
    def recalled(cls, part: dict) -> Origin | None:
        """The clips a record's `continues` or a latents file's `extends` names; ValueError when one is no
        longer the file the run read (source_check.py)."""
        if "bridge" not in part:
            return None
        digests = part.get("bridge_sha256") or (None, None)
        first, second = (trusted_source(path, digest, "a clip this bridge joins")
                         for path, digest in zip(part["bridge"], digests))
        return cls(Clip(first, probe_video(first), own_latents(first), source_digest(first)),
                   Clip(second, probe_video(second), own_latents(second, from_start=True), source_digest(second)))

    def stream(self) -> VideoFacts:  # the video joins the first clip's stream: its size and frame rate
        return self.first.facts

    def frame(self, request) -> np.ndarray:
        """The first clip's last frame at the working size: its latents' size, else each side to 16."""
        first = self.first
        if first.latents is not None:
            height, width = (8 * side for side in first.latents.video.shape[-2:])
        else:
            width, height = working_size(first.facts.width, first.facts.height, request.method.resolution)
        return resized(last_frames(first.path, 1)[0], width, height)

    def begin(self, request, models, manager) -> Beginning:
        pixels = self.frame(request)
        height, width = pixels.shape[:2]
        first, second = self.first.latents, self.second.latents
        vae = models.vae
        with manager.use(vae):
            set_vae_tiling(vae, False)
            start = first.video[:, :, -1:] if first is not None else encode_latent(vae, pixels)
            if second is not None and second.video.shape[-2:] == start.shape[-2:]:
                end = second.video[:, :, :1]
            else:
                end = encode_latent(vae, resized(np.asarray(first_frame(self.second.path)), width, height))
        return Bridging(pixels, start.float(), end.float(), clips=self)

    def resumed(self, saved: SavedLatents, request, models, manager) -> Beginning:
        pixels = self.frame(request)
        return Bridging(pixels, saved.start, saved.end, SavedSections(saved.done, saved.video), clips=self)

    def described(self) -> dict:
        return {"bridges": [self.first.path.name, self.second.path.name]}

    def reads(self) -> tuple[Path, ...]:
        return (self.first.path, self.second.path)

    def restarts(self) -> dict:
        clips = (self.first, self.second)
        return {"bridge": [str(clip.path) for clip in clips], "bridge_sha256": [clip.digest for clip in clips]}


@dataclass
class Bridging(Beginning):
    """A bridge's beginning: its new frames sit between two clips copied as they are."""
    clips: BridgedClips | None = None

    def kept(self, index: int, pixels: torch.Tensor, settings: SectionSettings) -> torch.Tensor:
        """At the first clip's size; the earliest section's first frame (the start latent's: the first
        clip's last frame again) left out, as the clip itself shows it."""
        if index == settings.sections - 1:
            pixels = pixels[:, :, 1:]
        width, height = self.clips.first.facts.width, self.clips.first.facts.height
        return to_size(pixels, width, height)

    def joined(self) -> dict:
        first, second = self.clips.first, self.clips.second
        return {"before": Copied(first.path, first.facts.frames), "after": Copied(second.path, second.facts.frames),
                "fps": first.facts.fps}

    def joins(self) -> dict:
        return self.clips.restarts()  # the same two clips, by path and digest (BridgedClips.recalled reads it)


ORIGIN = BridgedClips  # how kinds.recalled finds this kind
