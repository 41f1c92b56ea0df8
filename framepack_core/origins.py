"""How a run starts: one small strategy object per kind of start, read by the pipeline's stages.

    NewPicture()                          a picture (and maybe an end frame) encoded by the VAE
    ExtendedVideo(source, facts, latents) a finished video continued forward: its frames kept as they are
    ResumedRun(saved, origin)             a stopped run: its saved latents over the origin it had

An origin's `begin` gives the `Beginning`: the start and end latents, the sections already done
(with the latents they made), and the frames kept before the new ones (the prefix). The stages
(generation.py) only ask the beginning; a new kind of start (bridging two clips, branching a
video at a time, a loop) is a new class here with its own `Beginning`, not a flag in the stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .extension import ExtensionBase, extension_base
from .media.latents import SavedLatents
from .media.pictures import crop_to_bucket, resize_and_center_crop
from .media.video_files import VideoFacts
from .method.schedule import decode_span
from .method.sections import SavedSections, SectionSettings
from .models.encoders import encode_latent, set_vae_tiling


@dataclass
class Beginning:
    """What the sections start from, as an origin supplies it."""
    pixels: np.ndarray  # the start picture at the working size: the image encoder's input and the frame size
    start: torch.Tensor  # (1, 16, 1, h, w) the start latent
    end: torch.Tensor | None = None  # the end frame's latent (inverted sampling aims at it)
    history: SavedSections | None = None  # sections already done and the video latents they made
    prefix: ExtensionBase | None = None  # frames kept before the new ones (a video being extended)

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
        if index == 0:
            pixels = pixels[:, :, -4 * settings.window:]
        return self.prefix.to_source_size(pixels)

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


class Origin:
    """How a run starts. `frame` is the part a resumed run needs besides its saved latents."""

    def begin(self, request, models, manager) -> Beginning:
        raise NotImplementedError

    def frame(self, request, models, manager) -> tuple[np.ndarray, ExtensionBase | None]:
        """(the start picture at the working size, the prefix), without encoding any latent."""
        raise NotImplementedError


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
    """A video continued forward: its frames first, untouched, then the new sections."""
    source: Path  # the MP4 whose frames come first
    facts: VideoFacts  # its stream
    source_latents: SavedLatents | None = None  # its saved latents, when this app made it
    new_frames: int | None = None  # frames the new part keeps (None: its whole sections; new_part.py)

    def frame(self, request, models, manager):
        base = extension_base(self, models, manager, request, request.method.window)
        base.new_frames = self.new_frames
        return base.pixels, base

    def begin(self, request, models, manager) -> Beginning:
        base = extension_base(self, models, manager, request, request.method.window)
        base.new_frames = self.new_frames
        return Beginning(base.pixels, base.start, None, SavedSections(0, base.video), prefix=base)


@dataclass(frozen=True)
class ResumedRun(Origin):
    """A stopped, failed or killed run, from its saved latents: only the sections it lacks are sampled."""
    saved: SavedLatents
    origin: Origin = NewPicture()  # how the run first started (its picture, or the video it extends)

    def frame(self, request, models, manager):
        return self.origin.frame(request, models, manager)

    def begin(self, request, models, manager) -> Beginning:
        pixels, prefix = self.frame(request, models, manager)
        saved = self.saved
        return Beginning(pixels, saved.start, saved.end, SavedSections(saved.done, saved.video), prefix)
