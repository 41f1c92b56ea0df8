"""What the run path hands the engine (`Work`) and what the engine hands back (`Made`).

Plain data, no model library: the run path (run/lifecycle.py) builds and reads these without importing the
pipeline (generation.py), which a test's scripted engine never needs.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..events import Event
from ..request import Request

if TYPE_CHECKING:  # the origins hold tensors: torch, which this plain data never needs
    from .beginning import Origin


@dataclass(frozen=True)
class Work:
    """One video's part of a run: what to make, from where, into which files, and whom to tell."""
    request: Request
    origin: Origin  # how the run starts (beginning.Origin; each kind of start has one: starts/)
    video: Path  # the in-progress MP4, rewritten after each section
    latents: Path | None  # where the section latents are kept (None: not kept)
    tags: Callable[[dict], dict[str, str]]  # the MP4's tags, given what the run used
    emit: Callable[[Event], None]
    cancel: threading.Event
    meter: object  # a memory.usage.UsageMeter: each stage's seconds and memory, for the record


@dataclass(frozen=True)
class Made:
    """What the engine made, finished or stopped: its outcome."""
    sections_done: int = 0
    frames: int = 0
    width: int = 0
    height: int = 0
    attention: str = ""  # the kernel that ran ("" before sampling)
    vae_tiling: bool | None = None  # whether the VAE decoded in tiles (None before the first decode)
    fp8: str = "off"  # the FP8 mode that ran: off | storage | fast
    step_cache: str = ""  # the step cache's method ("" when off)
    blocks_computed: int = 0
    blocks_skipped: int = 0
    stopped: bool = False
