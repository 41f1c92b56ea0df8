"""The kinds of start a run's files can name, and reading one back from them.

A record's `continues` and a latents file's `extends` hold a start's own part (what `Origin.restarts` and
`Beginning.joins` wrote); each kind's `ORIGIN.recalled(part)` knows its own and answers None for another's.
A new kind of start is a module of starts/ with its `ORIGIN`, and its name in KINDS.
"""
from __future__ import annotations

from importlib import import_module

KINDS = ("bridge", "extend", "picture")  # each a module of starts/; the picture's (an empty part) last


def recalled(part: dict):
    """The origin (engine.beginning.Origin) of the start `part` names; ValueError (one sentence) when a video
    it names is missing or no longer the file the run read."""
    for kind in KINDS:
        origin = import_module(f"{__package__}.{kind}").ORIGIN.recalled(part)
        if origin is not None:
            return origin
    raise ValueError(f"This run's files name a kind of start this version does not know ({sorted(part)}).")
