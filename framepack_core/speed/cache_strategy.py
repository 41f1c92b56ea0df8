"""The one interface every step cache implements: decide whether a transformer call's blocks run,
then observe the residual they added when they did.

MagCache (magcache.py), TeaCache (teacache.py) and FirstBlockCache (first_block_cache.py) are each
a `StepCacheStrategy`; step_cache.py attaches one to a transformer, skips the blocks it says to
skip (adding the last residual again) and tells the block streamer what will run.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar

from framepack_core.options import CACHE_METHODS


class CacheMethod(StrEnum):
    MAGCACHE = "magcache"
    TEACACHE = "teacache"
    FIRST_BLOCK = "first-block"


DEFAULT_METHOD = CacheMethod(CACHE_METHODS[0])  # the app's default, from its one place for defaults


def cache_method(name: str) -> CacheMethod:
    try:
        return CacheMethod(name)
    except ValueError:
        raise ValueError(f"unknown step cache {name!r}; use one of {', '.join(CacheMethod)}") from None


class Moment(Enum):
    """When a strategy decides: it fixes which blocks a skipped call still runs."""
    CALL = "call"  # on the transformer call, before any block: a skipped call runs no block
    BLOCK_INPUT = "block input"  # in block 0, from its input, before it runs: block 0's weights are read
    BLOCK_OUTPUT = "block output"  # after block 0 ran, from its output: block 0 always runs


@dataclass(frozen=True)
class Call:
    """One transformer call of a section."""
    step: int  # 0-based, within the section
    branch: int  # which of a step's calls: 0 the prompt, 1 the negative prompt (real CFG)
    can_skip: bool  # the blocks ran before for this branch in this section: there is a residual to add


@dataclass(frozen=True)
class FirstBlock:
    """What a strategy deciding in block 0 may read: the block, its inputs and (after it ran) its output."""
    block: Any
    hidden_states: Any
    temb: Any
    output: Any = None  # block 0's hidden states out (Moment.BLOCK_OUTPUT only)


class StepCacheStrategy(ABC):
    """One step cache's rule. Keeps its own state per branch; forgets it between sections (`reset`)."""

    method: ClassVar[CacheMethod]
    decides_at: ClassVar[Moment]

    def __init__(self, threshold: float, steps: int, branches: int):
        self.threshold, self.steps, self.branches = float(threshold), int(steps), int(branches)

    @abstractmethod
    def reset(self) -> None:
        """The section ended: the next one has another context, so nothing carries over."""

    @abstractmethod
    def decide(self, call: Call, first: FirstBlock | None) -> bool:
        """Whether the call's blocks run (True) or are skipped. `first` is None for Moment.CALL."""

    def observe(self, call: Call, residual, previous) -> None:
        """The residual the blocks added in `call` (`previous`: that of the last computed call, or None)."""

    def always_computes(self, step: int) -> bool:
        """Whether `step` computes whatever happens: what the streamer may count on before it is called."""
        return step == 0
