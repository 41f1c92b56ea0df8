"""Section schedule: pure arithmetic on frame counts and RoPE positions. No models.

A section generates `window` latent frames. Latent frames decode to pixel frames as
`4T - 3`, so `n` sections (plus the start latent) give `4nK + 1` pixel frames at 30 fps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from framepack_core.settings import FPS, SamplingMode  # noqa: F401  (FPS: the frame rate belongs to the method; spelt once)


LATENT_CHANNELS = 16
# Clean context kept from the history, nearest first: 1 frame at 1x, 2 at 2x, 16 at 4x.
CONTEXT_1X, CONTEXT_2X, CONTEXT_4X = 1, 2, 16
CONTEXT_FRAMES = CONTEXT_1X + CONTEXT_2X + CONTEXT_4X


def section_count(seconds: float, window: int) -> int:
    # Python's round (half to even), as the published app computes it.
    return max(round(seconds * FPS / (window * 4)), 1)


def latent_paddings(sections: int) -> list[int]:
    """Blank gap (in windows) between the start frame and each inverted section.

    Beyond four sections the published schedule keeps the gap at 2 in the middle: the
    model was trained with small gaps, and a gap of n-1 windows would be far outside that.
    """
    if sections <= 4:
        return list(range(sections - 1, -1, -1))
    return [3] + [2] * (sections - 3) + [1, 0]


def latent_frame_count(sections: int, window: int) -> int:
    return sections * window + 1


def pixel_frame_count(latent_frames: int) -> int:
    return 4 * latent_frames - 3


def video_frame_count(seconds: float, window: int) -> int:
    return pixel_frame_count(latent_frame_count(section_count(seconds, window), window))


@dataclass(frozen=True)
class SectionLayout:
    """RoPE frame positions of everything the transformer sees in one section (1-D tensors)."""

    window: torch.Tensor  # the K noisy frames being generated
    clean: torch.Tensor  # the two clean 1x frames (start frame + nearest history frame)
    context_2x: torch.Tensor
    context_4x: torch.Tensor


def inverted_layout(padding: int, window: int) -> SectionLayout:
    """pre[1] blank[pK] window[K] post[1] 2x[2] 4x[16]; blank positions are a RoPE gap, never tokens."""
    sizes = [1, padding * window, window, CONTEXT_1X, CONTEXT_2X, CONTEXT_4X]
    pre, _blank, noisy, post, two, four = torch.arange(sum(sizes)).split(sizes)
    return SectionLayout(window=noisy, clean=torch.cat([pre, post]), context_2x=two, context_4x=four)


def forward_layout(window: int) -> SectionLayout:
    """start[1] 4x[16] 2x[2] 1x[1] window[K]: the new frames follow the history."""
    sizes = [1, CONTEXT_4X, CONTEXT_2X, CONTEXT_1X, window]
    start, four, two, one, noisy = torch.arange(sum(sizes)).split(sizes)
    return SectionLayout(window=noisy, clean=torch.cat([start, one]), context_2x=two, context_4x=four)


def decode_span(section_index: int, sections: int, window: int, mode: SamplingMode) -> int:
    """How many of the newest latent frames to decode after a section (0 = all so far).

    The first section decodes everything; later ones decode two windows, so the overlap with
    the frames already decoded can be blended. The last inverted section also carries the
    start latent, hence the extra frame.
    """
    if section_index == 0:
        return 0
    last = section_index == sections - 1
    return 2 * window + (1 if last and mode == SamplingMode.INVERTED else 0)


def overlap_frames(window: int) -> int:
    return 4 * window - 3
