"""Streaming a model's blocks through a few device slots, each copied in just before it runs.

Attached from outside with forward hooks on the blocks themselves (plain torch hooks, so any
nn.Module works: diffusers' transformer blocks and transformers' decoder layers alike):

- before a streamed block runs, the compute stream waits for the event of its copy and the
  block's tensors are pointed into its slot;
- after it ran, its tensors point back at the host copy, an event marks the end of its kernels,
  and the freed slot is refilled at once (on the copy stream, after that event) with the next
  streamed block in run order, wrapping around into the next forward pass.

So with `slots = prefetch + 1`, up to `prefetch` copies run ahead of compute. Blocks are
expected to run in list order; one that runs out of order is loaded on demand, which is slower
but still correct.

Host copies start pageable (copied through small pinned staging buffers). Once a placement has
run a second full pass, its streamed blocks are worth page-locked memory and are moved there: a
diffusion transformer qualifies at its second step, a text encoder that runs once per placement
never takes pinned memory from it.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Sequence

import torch

from .budget import size_text
from .device import Device
from .gates import BlockGates
from .weights import WeightGroup

log = logging.getLogger(__name__)

PIN_AFTER_PASSES = 2


class BlockStreamer:
    def __init__(self, blocks: Sequence[torch.nn.Module], groups: Sequence[WeightGroup], streamed: Sequence[int],
                 device: Device, slots: int, slot_bytes: int, pin: Sequence[int] | None = None,
                 gates: BlockGates | None = None):
        """`pin`: the streamed blocks that may take page-locked host memory (None: all of them); the
        others keep streaming from where their host copy is (a mapped file, or pageable memory).
        `gates`: the run's answers to "will this block run?" (gates.py); None: every block runs."""
        if slots < 1 or not streamed:
            raise ValueError("a streamer needs at least one slot and one streamed block")
        self.device = device
        self.gates = gates if gates is not None else BlockGates()
        self.groups = list(groups)
        self.order = list(streamed)  # block indices, in the order they run
        self.blocks = list(blocks)
        self.pin = list(self.order if pin is None else pin)
        self._position = {block: i for i, block in enumerate(self.order)}
        self.slots = [device.alloc(slot_bytes) for _ in range(slots)]
        self._free = deque(range(slots))
        # When a slot may be overwritten. At first: once the work queued before it was allocated is
        # done, since its memory may have been freed by that work.
        self._slot_released: list = [device.compute_event()] * slots
        self._loaded: dict[int, tuple[int, object]] = {}  # block -> (slot, copy event)
        self._views: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._running: int | None = None
        self.loads = 0  # copies issued, for tests and benchmarks
        self.skipped = 0  # block calls a gate said would not run: nothing copied for them
        self.passes = 0  # full passes since this streamer was attached
        self._handles = []
        for index in self.order:
            self._handles.append(blocks[index].register_forward_pre_hook(self._pre_hook(index)))
            self._handles.append(blocks[index].register_forward_hook(self._post_hook(index)))

    @property
    def prefetch(self) -> int:
        return len(self.slots) - 1

    def _pre_hook(self, index: int):
        def hook(module, args):
            self.before(index)
        return hook

    def _post_hook(self, index: int):
        def hook(module, args, output):
            self.after(index)
        return hook

    def _will_run(self, index: int, next_pass: bool) -> bool | None:
        return self.gates.will_run(self.blocks[index], next_pass)

    def before(self, index: int) -> None:
        if self._running is not None:  # the previous block raised before its post-hook: release it
            self.after(self._running, prefetch=False)
        if self._will_run(index, next_pass=False) is False:
            # Its forward will not touch the weights (a step cache skips it): copy nothing, and give
            # back a slot it may hold from an optimistic prefetch.
            if index in self._loaded:
                slot, _ = self._loaded.pop(index)
                self._free.append(slot)
            self._running = None
            self.skipped += 1
            self._skipping = index
            return
        self._skipping = None
        if index not in self._loaded:
            self._load(index, evict_for=index)
        slot, copied = self._loaded[index]
        self.device.compute_waits(copied)
        key = (index, slot)
        if key not in self._views:
            self._views[key] = self.groups[index].views(self.slots[slot])
        self.groups[index].point_to(self.slots[slot], self._views[key])
        self._running = index

    def after(self, index: int, prefetch: bool = True) -> None:
        if getattr(self, "_skipping", None) == index:  # skipped in before(): nothing was placed
            self._skipping = None
            self._end_of_block(index, prefetch)
            return
        slot, _ = self._loaded.pop(index)
        self.groups[index].point_to_host()
        self._slot_released[slot] = self.device.compute_event()
        self._free.append(slot)
        self._running = None
        self._end_of_block(index, prefetch)

    def _end_of_block(self, index: int, prefetch: bool) -> None:
        if index == self.order[-1]:
            self.passes += 1
            if self.passes == PIN_AFTER_PASSES:
                self._pin_streamed()
        if prefetch:  # issued after the block's kernels were queued, so a CPU-side staging copy overlaps them
            self._prefetch_after(index)

    def _pin_streamed(self) -> None:
        unpinned = sum(self.groups[i].nbytes for i in self.pin if not self.groups[i].pin())
        if unpinned:
            log.warning("%s of streamed weights could not be pinned in host memory; they keep going through "
                        "small pinned staging buffers, which overlaps less with compute", size_text(unpinned))

    def _prefetch_after(self, index: int) -> None:
        """Copy ahead the next blocks that will run. A gate's False skips a block; its None (not
        known yet, e.g. the next step's blocks before its cache decided) stops the copying ahead:
        that block is copied when it is called, once the decision is made. A step whose blocks are
        skipped then costs no copies (a cache that decides ahead keeps the prefetch going)."""
        start, issued = self._position[index], 0
        for step in range(1, len(self.order)):
            if issued >= self.prefetch or not self._free:
                break
            position = start + step
            upcoming = self.order[position % len(self.order)]
            will_run = self._will_run(upcoming, next_pass=position >= len(self.order))
            if will_run is None:
                break  # loaded on demand once known: a skipped step then costs no copy at all
            if will_run is False:
                continue
            if upcoming not in self._loaded:
                self._load(upcoming)
            issued += 1

    def _load(self, index: int, evict_for: int | None = None) -> None:
        if not self._free:
            # Out of order: give up the prefetched block that would run last. Its copy may still be
            # in flight, but the new copy is queued behind it on the same stream.
            victim = max((b for b in self._loaded if b != evict_for),
                         key=lambda b: (self._position[b] - self._position[evict_for]) % len(self.order))
            slot, _ = self._loaded.pop(victim)
            self._free.append(slot)
        slot = self._free.popleft()
        event = self.groups[index].copy_to(self.slots[slot], after=self._slot_released[slot])
        self._loaded[index] = (slot, event)
        self.loads += 1

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def detach(self) -> None:
        """Remove the hooks, point every block at its host copy and let the slots go."""
        self.remove_hooks()
        self.device.synchronize()  # no copy into a slot may still be in flight when its memory is reused
        for index in self.order:
            self.groups[index].point_to_host()
        self._loaded.clear()
        self._views.clear()
        self._free.clear()
        self.slots = []
