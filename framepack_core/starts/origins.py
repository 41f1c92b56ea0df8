"""How a run starts: one small strategy object per kind of start, read by the pipeline's stages.

    NewPicture()                          a picture (and maybe an end frame) encoded by the VAE
    ExtendedVideo(source, facts, latents) a finished video continued forward: its frames kept as they are
                                          (with `cut`: a branch, only its frames before the cut)
    BridgedClips(first, second)           the frames that lead from one clip's end into another's start
    ResumedRun(saved, origin)             a stopped run: its saved latents over the origin it had

An origin's `begin` gives the `Beginning`: the start and end latents, the sections already done
(with the latents they made), the frames copied before and after the new ones, and what the
latents file records of them. The stages (generation.py) only ask the beginning; a new kind of
start is a new class here with its own `Beginning`, not a flag in the stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .extension import ExtensionBase, extension_base, resized, to_size, working_size
from ..media.latents import SavedLatents
from ..media.pictures import crop_to_bucket, resize_and_center_crop
from ..media.segments import Copied
from ..media.video_files import VideoFacts, cut_points, first_frame, last_frames
from ..method.schedule import decode_span
from ..method.sections import SavedSections, SectionSettings
from ..models.encoders import encode_latent, set_vae_tiling
from .source_check import source_digest


@dataclass
class Beginning:
    """What the sections start from, as an origin supplies it."""
    pixels: np.ndarray  # the start picture at the working size: the image encoder's input and the frame size
    start: torch.Tensor  # (1, 16, 1, h, w) the start latent
    end: torch.Tensor | None = None  # the end frame's latent (inverted sampling aims at it)
    history: SavedSections | None = None  # sections already done and the video latents they made
    prefix: ExtensionBase | None = None  # frames kept before the new ones (a video being extended)
    notices: tuple[str, ...] = ()  # told to the user as the run begins (where a branch cut its source)

    @property
    def done(self) -> int:
        return self.history.done if self.history is not None else 0

    def decode_span(self, index: int, count: int, settings: SectionSettings, available: int) -> int:
        """How many of the newest latent frames to decode after section `index` (0: all of them).

        Extending, the first section decodes the newest two windows (the source's last latents give
        the blend its context) but keeps only its own frames (`kept`)."""
        if self.prefix is not None and index == 0:
            return min(2 * settings.window, available)
        return decode_span(index, count, settings.window, settings.mode)

    def kept(self, index: int, pixels: torch.Tensor, settings: SectionSettings) -> torch.Tensor:
        """The decoded frames that join the video: the prefix's frames stay as they are, at their size."""
        if self.prefix is None:
            return pixels
        if index == 0:  # its own frames, less those a branch's source shows before its cut
            pixels = pixels[:, :, -4 * settings.window + self.prefix.skip:]
        return self.prefix.to_source_size(pixels)

    def joined(self) -> dict:
        """SegmentedVideo's keywords for the frames copied around the new ones, and their frame rate."""
        prefix = self.prefix
        if prefix is None:
            return {}
        return {"before": Copied(prefix.source, prefix.frames, cut=prefix.cut), "fps": prefix.fps,
                "new_frames": prefix.new_frames}

    def joins(self) -> dict:
        """What the latents file records of the frames copied in (`extends`), so the run can be resumed
        and its video extended again."""
        prefix = self.prefix
        if prefix is None:
            return {}
        record = {"video": str(prefix.source), "frames": prefix.frames, "latents": prefix.latent_frames,
                  "sha256": source_digest(prefix.source)}  # a resume reads only this very file (source_check.py)
        if prefix.new_frames is not None:
            record["new_frames"] = prefix.new_frames
        if prefix.cut:
            record["cut"] = True
        return record

    def replay(self, settings: SectionSettings, count: int) -> Iterator[torch.Tensor]:
        """The video latents after each section already done, cut from the saved ones: what each
        section's decode saw when it ran, so the video so far is rebuilt exactly."""
        video, window = self.history.video_latents, settings.window
        for index in range(self.done):
            if self.prefix is not None:  # extending: the source's latents, then the new sections
                yield video[:, :, : self.prefix.latent_frames + (index + 1) * window]
            elif settings.mode == "forward":
                yield video[:, :, : 1 + (index + 1) * window]
            elif index == count - 1:  # the last inverted section also carries the start latent
                yield video
            else:
                yield video[:, :, video.shape[2] - (index + 1) * window:]


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
        clips = (self.clips.first.path, self.clips.second.path)
        return {"bridge": [str(path) for path in clips], "bridge_sha256": [source_digest(path) for path in clips]}


class Origin:
    """How a run starts. `frame` is the part a resumed run needs besides its saved latents."""

    def begin(self, request, models, manager) -> Beginning:
        raise NotImplementedError

    def frame(self, request, models, manager) -> tuple[np.ndarray, ExtensionBase | None]:
        """(the start picture at the working size, the prefix), without encoding any latent."""
        raise NotImplementedError

    def resumed(self, saved: SavedLatents, request, models, manager) -> Beginning:
        """The beginning of this origin's run, stopped: its saved latents, nothing encoded again."""
        pixels, prefix = self.frame(request, models, manager)
        return Beginning(pixels, saved.start, saved.end, SavedSections(saved.done, saved.video), prefix)

    def described(self) -> dict:
        """What the run's record says of where its video comes from ({} for a picture)."""
        return {}

    def reads(self) -> tuple[Path, ...]:
        """The videos this start reads (never to be written over; same_file.py)."""
        return ()

    def restarts(self) -> dict:
        """What the run's record keeps so that, killed before its first section's latents, it is made
        again from the same start (continuation.first_origin reads it back; {} for a picture)."""
        return {}


class NewPicture(Origin):
    """The request's picture, and its end frame when there is one, encoded by the VAE."""

    def frame(self, request, models, manager):
        return crop_to_bucket(request.image, request.method.resolution), None

    def begin(self, request, models, manager) -> Beginning:
        pixels, _ = self.frame(request, models, manager)
        vae = models.vae
        with manager.use(vae):
            # One picture never needs tiles: encoded whole, the start latent does not depend on memory.
            set_vae_tiling(vae, False)
            start = encode_latent(vae, pixels)
            end = None
            if request.end_image is not None:
                height, width = pixels.shape[:2]
                end = encode_latent(vae, resize_and_center_crop(request.end_image, width, height))
            if request.method.loop:  # the video leads back into its first frame
                end = start
        return Beginning(pixels, start, end)


@dataclass(frozen=True)
class ExtendedVideo(Origin):
    """A video continued forward: its frames first, untouched, then the new sections. With `cut`, a
    branch: only its frames before that one (a cut point of its stream), then the new sections."""
    source: Path  # the MP4 whose frames come first
    facts: VideoFacts  # its stream
    source_latents: SavedLatents | None = None  # its saved latents, when this app made it
    new_frames: int | None = None  # frames the new part keeps (None: its whole sections; new_part.py)
    cut: int | None = None  # a branch: the source's frames kept (None: all of them)

    def frame(self, request, models, manager):
        base = extension_base(self, models, manager, request, request.method.window)
        base.new_frames = self.new_frames
        return base.pixels, base

    def begin(self, request, models, manager) -> Beginning:
        base = extension_base(self, models, manager, request, request.method.window)
        base.new_frames = self.new_frames
        notices = ()
        if self.cut is not None:
            kept = ("kept as they are" if self.cut in cut_points(self.source) else
                    "encoded again (it has no keyframe near that moment to cut at without re-encoding)")
            notices = (f"Branching {self.source.name} at {self.cut / self.facts.fps:.2f} s (its frame {self.cut}): "
                       f"its frames before it are {kept}.",)
        return Beginning(base.pixels, base.start, None, SavedSections(0, base.video), prefix=base, notices=notices)

    def described(self) -> dict:
        if self.cut is None:
            return {"extends": self.source.name}
        return {"branches": self.source.name, "from_seconds": round(self.cut / self.facts.fps, 3)}

    def reads(self) -> tuple[Path, ...]:
        return (self.source,)

    def restarts(self) -> dict:
        kept = {"video": str(self.source), "frames": self.facts.frames if self.cut is None else self.cut,
                "sha256": source_digest(self.source)}  # read back only if still this file (source_check.py)
        return kept | ({"new_frames": self.new_frames} if self.new_frames is not None else {}) | (
            {"cut": True} if self.cut is not None else {})


@dataclass(frozen=True)
class Clip:
    """A video a bridge joins, copied as it is: its stream and, when this app made it, its latents."""
    path: Path
    facts: VideoFacts
    latents: SavedLatents | None = None


@dataclass(frozen=True)
class BridgedClips(Origin):
    """The frames that lead from `first`'s last frame into `second`'s first, sampled inverted: the
    first clip's last latent frame is the start (its saved one, else its last frame encoded), the
    second's first frame the end frame (its saved latent, else encoded)."""
    first: Clip
    second: Clip

    @property
    def facts(self) -> VideoFacts:  # the video joins the first clip's stream: its size and frame rate
        return self.first.facts

    def frame(self, request, models, manager):
        """The first clip's last frame at the working size: its latents' size, else each side to 16."""
        first = self.first
        if first.latents is not None:
            height, width = (8 * side for side in first.latents.video.shape[-2:])
        else:
            width, height = working_size(first.facts.width, first.facts.height, request.method.resolution)
        return resized(last_frames(first.path, 1)[0], width, height), None

    def begin(self, request, models, manager) -> Beginning:
        pixels, _ = self.frame(request, models, manager)
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
        pixels, _ = self.frame(request, models, manager)
        return Bridging(pixels, saved.start, saved.end, SavedSections(saved.done, saved.video), clips=self)

    def described(self) -> dict:
        return {"bridges": [self.first.path.name, self.second.path.name]}

    def reads(self) -> tuple[Path, ...]:
        return (self.first.path, self.second.path)

    def restarts(self) -> dict:
        clips = (self.first.path, self.second.path)
        return {"bridge": [str(path) for path in clips], "bridge_sha256": [source_digest(path) for path in clips]}


@dataclass(frozen=True)
class ResumedRun(Origin):
    """A stopped, failed or killed run, from its saved latents: only the sections it lacks are sampled."""
    saved: SavedLatents
    origin: Origin = NewPicture()  # how the run first started (its picture, the video it extends, the clips)

    def frame(self, request, models, manager):
        return self.origin.frame(request, models, manager)

    def begin(self, request, models, manager) -> Beginning:
        return self.origin.resumed(self.saved, request, models, manager)

    def described(self) -> dict:
        return self.origin.described()

    def reads(self) -> tuple[Path, ...]:
        return self.origin.reads()

    def restarts(self) -> dict:
        return self.origin.restarts()
