"""The latent history of a generation and the packed clean context cut from it.

The transformer always sees the same amount of context, whatever the video length: the
start frame and the nearest history frame at full resolution (1x), the next 2 frames
through the 2x patch kernel, the next 16 through the 4x kernel. Missing history is zeros.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedule import CONTEXT_1X, CONTEXT_2X, CONTEXT_4X, CONTEXT_FRAMES, SectionLayout


@dataclass(frozen=True)
class PackedContext:
    clean: torch.Tensor  # (1, 16, 2, h, w): start frame ++ nearest history frame
    context_2x: torch.Tensor  # (1, 16, 2, h, w)
    context_4x: torch.Tensor  # (1, 16, 16, h, w)
    layout: SectionLayout


class InvertedHistory:
    """Anti-drifting order: sections are generated from the end of the video towards the start.

    The buffer holds the newest-generated frames first, which are also the earliest in time,
    so its first `generated` frames are the video so far in temporal order.
    """

    def __init__(self, start_latent: torch.Tensor, end_latent: torch.Tensor | None = None):
        _, c, _, h, w = start_latent.shape
        self.start = start_latent.float()
        self.end = None if end_latent is None else end_latent.float()
        self.buffer = torch.zeros(1, c, CONTEXT_FRAMES, h, w, dtype=torch.float32)
        self.generated = 0

    def context(self, layout: SectionLayout, first_section: bool) -> PackedContext:
        one, two, four = self.buffer[:, :, :CONTEXT_FRAMES].split([CONTEXT_1X, CONTEXT_2X, CONTEXT_4X], dim=2)
        if first_section and self.end is not None:
            # The user's end frame stands where the (still empty) later video would be.
            one = self.end
        return PackedContext(torch.cat([self.start, one], dim=2), two, four, layout)

    def add(self, latents: torch.Tensor) -> None:
        self.generated += latents.shape[2]
        self.buffer = torch.cat([latents.float(), self.buffer], dim=2)

    def restore(self, video: torch.Tensor) -> None:
        """The state after the sections that made `video` (what `video()` returned then)."""
        self.generated = 0
        self.buffer = torch.zeros_like(self.buffer[:, :, :CONTEXT_FRAMES])
        self.add(video)

    def video(self) -> torch.Tensor:
        return self.buffer[:, :, : self.generated]


class ForwardHistory:
    """F1 order: the start frame first, each section appended after the last."""

    def __init__(self, start_latent: torch.Tensor):
        _, c, _, h, w = start_latent.shape
        self.start = start_latent.float()
        self.buffer = torch.cat([torch.zeros(1, c, CONTEXT_FRAMES, h, w, dtype=torch.float32), self.start], dim=2)
        self.generated = 1

    def context(self, layout: SectionLayout, first_section: bool) -> PackedContext:
        four, two, one = self.buffer[:, :, -CONTEXT_FRAMES:].split([CONTEXT_4X, CONTEXT_2X, CONTEXT_1X], dim=2)
        return PackedContext(torch.cat([self.start, one], dim=2), two, four, layout)

    def add(self, latents: torch.Tensor) -> None:
        self.generated += latents.shape[2]
        self.buffer = torch.cat([self.buffer, latents.float()], dim=2)

    def restore(self, video: torch.Tensor) -> None:
        """The state after the sections that made `video`; it may also be any video's latents to continue."""
        self.generated = 0
        self.buffer = torch.zeros_like(self.buffer[:, :, :CONTEXT_FRAMES])
        self.add(video)

    def video(self) -> torch.Tensor:
        return self.buffer[:, :, -self.generated :]
