"""What the stages ask of any start: an `Origin` gives the `Beginning` the sections start from.

The pipeline (generation.py) knows only these two. Each kind of start (framepack_core/starts/) has an
origin of its own and, where its frames are joined differently (an extension keeps its source's frames
first, a bridge sits between two clips), a beginning of its own: the stages never ask which kind it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..media.latents import SavedLatents
from ..media.video_files import VideoFacts
from ..method.schedule import decode_span
from ..method.sections import SavedSections, SectionSettings
from ..settings import SamplingMode


@dataclass
class Beginning:
    """What the sections start from: a picture's, unless a start's own beginning says otherwise."""
    pixels: np.ndarray  # the start picture at the working size: the image encoder's input and the frame size
    start: torch.Tensor  # (1, 16, 1, h, w) the start latent
    end: torch.Tensor | None = None  # the end frame's latent (inverted sampling aims at it)
    history: SavedSections | None = None  # sections already done and the video latents they made
    notices: tuple[str, ...] = ()  # told to the user as the run begins (where a branch cut its source)

    @property
    def done(self) -> int:
        return self.history.done if self.history is not None else 0

    def decode_span(self, index: int, count: int, settings: SectionSettings, available: int) -> int:
        """How many of the newest latent frames to decode after section `index` (0: all of them)."""
        return decode_span(index, count, settings.window, settings.mode)

    def kept(self, index: int, pixels: torch.Tensor, settings: SectionSettings) -> torch.Tensor:
        """The decoded frames that join the video (all of them: no other video's frames around them)."""
        return pixels

    def joined(self) -> dict:
        """SegmentedVideo's keywords for frames copied around the new ones, and their frame rate (none)."""
        return {}

    def joins(self) -> dict:
        """What the latents file records (`extends`) of the videos whose frames are copied in (none)."""
        return {}

    def replay(self, settings: SectionSettings, count: int) -> Iterator[torch.Tensor]:
        """The video latents after each section already done, cut from the saved ones: what each
        section's decode saw when it ran, so the video so far is rebuilt exactly."""
        for index in range(self.done):
            yield self.replayed(self.history.video_latents, index, count, settings.window, settings.mode)

    def replayed(self, video: torch.Tensor, index: int, count: int, window: int, mode: SamplingMode) -> torch.Tensor:
        if mode == SamplingMode.FORWARD:
            return video[:, :, : 1 + (index + 1) * window]
        if index == count - 1:  # the last inverted section also carries the start latent
            return video
        return video[:, :, video.shape[2] - (index + 1) * window:]


class Origin:
    """How a run starts, as the pipeline and the run ask it. Each kind of start has one (starts/)."""

    def begin(self, request, models, manager) -> Beginning:
        raise NotImplementedError

    def resumed(self, saved: SavedLatents, request, models, manager) -> Beginning:
        """The beginning of this origin's run, stopped: its saved latents, nothing encoded again."""
        raise NotImplementedError

    def described(self) -> dict:
        """What the run's record says of where its video comes from ({} for a picture)."""
        return {}

    def restarts(self) -> dict:
        """What the run's record keeps (`continues`) so that, killed before its first section's latents, it
        is made again from the same start (starts.recalled reads it back; {} for a picture)."""
        return {}

    def reads(self) -> tuple[Path, ...]:
        """The videos this start reads (never to be written over; run/same_file.py)."""
        return ()

    def stream(self) -> VideoFacts | None:
        """The video stream the new frames join (its size and frame rate); None: the app's own."""
        return None
