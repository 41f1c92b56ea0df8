"""CFG-parallel: with a CFG above 1, the conditional and the unconditional pass of each step on two
processes at once, their velocities exchanged (one all-gather per step) so that both hold both.

The section loop's denoiser (method/sections.py) asks the transformer for `GUIDED_PAIR`; when set,
it hands over both passes' arguments at once instead of calling the transformer twice in turn.
"""
from __future__ import annotations

from contextlib import contextmanager

from .group import Layout, Ranks
from .shard import sequence_parallel

GUIDED_PAIR = "framepack_guided_pair"


@contextmanager
def cfg_parallel(transformer, ranks: Ranks):
    """For the body, each CFG pass of `transformer`'s calls made by the ranks of its branch only."""
    if ranks.guidance is None:
        yield
        return

    def both(velocity, positive: dict, negative: dict):
        mine = velocity(negative if ranks.branch else positive)
        return tuple(ranks.all_gather_passes(mine))

    setattr(transformer, GUIDED_PAIR, both)
    try:
        yield
    finally:
        delattr(transformer, GUIDED_PAIR)


def layout_for(request) -> Layout:
    """How `request`'s processes share the work (group.Layout.of: CFG on two, then the token split)."""
    speed = request.speed
    return Layout.of(speed.gpus, request.method.cfg, bool(speed.step_cache or speed.cache_calibrate))


@contextmanager
def parallel(transformer, ranks):
    """`transformer` split over the ranks for the body: its CFG passes, then its tokens."""
    with cfg_parallel(transformer, ranks), sequence_parallel(transformer, ranks):
        yield
