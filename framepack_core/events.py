"""What a run tells its caller, as plain data: the run calls `emit(event)` for each (the command line
prints them, the page's worker puts them on a queue for the page), and the names of its stages and
of where a run or a queued job stands (str-valued: records, JSON and the queue keep the same words)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the events are read where numpy is not (the command line's parser, the queue's listing)
    import numpy as np


class StageName(StrEnum):
    LOADING = "loading"
    ENCODING_PROMPT = "encoding_prompt"
    ENCODING_IMAGE = "encoding_image"
    SAMPLING = "sampling"
    DECODING = "decoding"
    WRITING = "writing"


class Status(StrEnum):
    """A run's record's `status`, a queued job's, and what the page shows of a run."""
    QUEUED = "queued"  # a job not started yet (the queue's only)
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop, not ended yet (the page shows it; records never say it)
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a queued job's run cut off by the queue's own stop: the job goes back to the queue


ENDED = frozenset({Status.FINISHED, Status.STOPPED, Status.FAILED})


@dataclass(frozen=True)
class Stage:
    name: StageName
    message: str

    def __post_init__(self):
        object.__setattr__(self, "name", StageName(self.name))  # a stage spelt wrong fails where it is made


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
    final_frames: int = 0  # how many of its frames, from the first, no later section changes


@dataclass(frozen=True)
class Finished:
    video: Path | None  # None when stopped before the first section was done
    frames: int
    fps: float  # the video's frame rate: 30 for a new video, an extended or bridged one's own (29.97, 24, ...)
    sections: int  # sections completed
    width: int
    height: int
    seed: int
    seconds_elapsed: float
    stopped: bool = False
    attention: str = ""  # the attention kernel that ran: sage | flash | xformers | sdpa ("" before sampling)
    vae_tiling: bool | None = None  # whether the VAE decoded in tiles (None: nothing decoded)
    fp8: str = "off"  # the FP8 mode that ran: off | storage (FP8 weights) | fast (and FP8 arithmetic)
    step_cache: str = ""  # the step cache used: one of settings.CACHE_METHODS ("" when off)
    blocks_computed: int = 0  # transformer block evaluations that ran (counted only with a step cache)
    blocks_skipped: int = 0  # and those the step cache skipped


@dataclass(frozen=True)
class Failed:
    message: str  # one sentence for the user, with what to try
    detail: str = ""  # the traceback, for logs
    partial_video: Path | None = None


Event = Stage | Notice | Step | Preview | SectionDone | Finished | Failed
