"""What the engine tells its caller. Plain data: the engine yields, it never calls back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Stage:
    name: str  # loading | encoding_prompt | encoding_image | sampling | decoding | writing
    message: str


@dataclass(frozen=True)
class Notice:
    message: str  # something the user should know that does not stop the run


@dataclass(frozen=True)
class Step:
    section: int  # 0-based, in generation order
    sections: int
    step: int  # 1-based
    steps: int


@dataclass(frozen=True)
class Preview:
    section: int
    step: int
    image: np.ndarray = field(repr=False)  # (h, T*w, 3) uint8 from the latent-to-RGB map


@dataclass(frozen=True)
class SectionDone:
    section: int
    sections: int
    frames: int  # pixel frames in the video so far
    video: Path  # playable MP4 of the video so far
    seconds_elapsed: float


@dataclass(frozen=True)
class Finished:
    video: Path | None  # None when stopped before the first section was done
    frames: int
    fps: int
    sections: int  # sections completed
    width: int
    height: int
    seed: int
    seconds_elapsed: float
    stopped: bool = False
    attention: str = ""  # the attention kernel that ran: sage | flash | xformers | sdpa ("" before sampling)
    vae_tiling: bool | None = None  # whether the VAE decoded in tiles (None: nothing decoded)
    fp8: str = "off"  # the FP8 mode that ran: off | storage (FP8 weights) | fast (and FP8 arithmetic)
    step_cache: str = ""  # the step cache used: teacache | first-block ("" when off)
    blocks_computed: int = 0  # transformer block evaluations that ran (counted only with a step cache)
    blocks_skipped: int = 0  # and those the step cache skipped


@dataclass(frozen=True)
class Failed:
    message: str  # one sentence for the user, with what to try
    detail: str = ""  # the traceback, for logs
    partial_video: Path | None = None


Event = Stage | Notice | Step | Preview | SectionDone | Finished | Failed
