"""Gates: whoever decides that a block's forward will not run (a step cache) says so to the streamer.

A block that a step cache skips is still called (its hook returns the cached result without
touching the weights), so the streamer sees the call; without a gate it would copy the block's
weights in for nothing, and a cache that skips half the steps would save no streaming at all.

One `BlockGates` belongs to one run: the run's memory manager hands it to every streamer it
makes (`ModelManager(gates=...)`, or the manager's own), and the run gives the same object to its
step cache, which sets its answer there:

    handle = gates.add(blocks, will_run)     # will_run(block, next_pass) -> True | False | None
    ...
    handle.remove()

`will_run(block, next_pass=False)` answers for the block's coming call in the pass under way,
`next_pass=True` for its call in the next pass (asked when the streamer copies ahead across the
end of a pass). True: it runs, copy it. False: it will not run, copy nothing. None: not known yet;
the streamer stops copying ahead there and copies the block when it is called. A cache that decides at the start of a pass
(TeaCache, in the first block) answers None for the next pass and exactly once it has decided; a
cache whose decisions are known ahead (MagCache's schedule) can answer the next pass exactly too.
Generic: keyed by module, knows nothing of what the blocks are.
"""
from __future__ import annotations

import weakref
from typing import Callable, Iterable, Optional

import torch

Gate = Callable[[torch.nn.Module, bool], Optional[bool]]


class BlockGates:
    """The answers of one run's gates, by block. A block with no gate always runs."""

    def __init__(self):
        self._gates: "weakref.WeakKeyDictionary[torch.nn.Module, Gate]" = weakref.WeakKeyDictionary()

    def add(self, blocks: Iterable[torch.nn.Module], will_run: Gate) -> GateHandle:
        blocks = list(blocks)
        for block in blocks:
            self._gates[block] = will_run
        return GateHandle(self, blocks, will_run)

    def gate(self, block: torch.nn.Module) -> Gate | None:
        return self._gates.get(block)

    def will_run(self, block: torch.nn.Module, next_pass: bool) -> bool | None:
        gate = self._gates.get(block)
        return True if gate is None else gate(block, next_pass)

    def _remove(self, block: torch.nn.Module, gate: Gate) -> None:
        if self._gates.get(block) is gate:
            del self._gates[block]


class GateHandle:
    def __init__(self, gates: BlockGates, blocks: list[torch.nn.Module], gate: Gate):
        self._gates = gates
        self._blocks = [weakref.ref(b) for b in blocks]
        self._gate = gate

    def remove(self) -> None:
        for ref in self._blocks:
            block = ref()
            if block is not None:
                self._gates._remove(block, self._gate)
