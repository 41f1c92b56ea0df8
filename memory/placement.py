"""One model's weights on a device: its fixed part and resident blocks copied once, the rest streamed."""
from __future__ import annotations

import torch

from .budget import BlockPlan, ModelBytes, TierPlan
from .device import Device
from .gates import BlockGates
from .swap import BlockStreamer
from .weights import WeightGroup, layout_bytes

# A list of one is not a sequence to prefetch along. Blocks must be used only by calling them
# (their hooks fire then); a model that reads a block's weights from outside would see host copies.
MIN_BLOCKS = 2


def find_block_lists(module: torch.nn.Module) -> list[torch.nn.ModuleList]:
    """A model's repeated blocks: the outermost ModuleLists of at least MIN_BLOCKS modules of one class.

    For a HunyuanVideo transformer these are its double- and single-stream blocks, for Llama its
    decoder layers, in the order the forward pass runs them (registration order).
    """
    found, prefixes = [], []
    for name, sub in module.named_modules():
        if any(name.startswith(prefix) for prefix in prefixes):
            continue
        if isinstance(sub, torch.nn.ModuleList) and len(sub) >= MIN_BLOCKS and len({type(m) for m in sub}) == 1:
            found.append(sub)
            prefixes.append(name + ".")
    return found


def model_sizes(module: torch.nn.Module, tensor_bytes=None) -> ModelBytes:
    """What planning needs of a model, laid out as a ModelPlacement would lay it out, without placing it
    (a model on the meta device will do). `tensor_bytes`: as weights.layout_bytes."""
    seen: set[int] = set()
    blocks = tuple(layout_bytes([block], seen, tensor_bytes) for blocks in find_block_lists(module) for block in blocks)
    return ModelBytes(blocks, layout_bytes([module], seen, tensor_bytes))


class ModelPlacement:
    def __init__(self, module: torch.nn.Module, device: Device):
        lists = find_block_lists(module)
        self.device = device
        self.blocks = [block for blocks in lists for block in blocks]
        seen: set[int] = set()
        self.block_groups = [WeightGroup([block], device, seen) for block in self.blocks]
        self.rest = WeightGroup([module], device, seen)  # whatever no block holds
        self.plan: BlockPlan | None = None  # None while off the device
        self.streamer: BlockStreamer | None = None
        self.last_used = 0  # manager's clock, for evicting the least recently used model first
        self.terms: tuple = ()  # the budget it was planned under; another budget plans it again
        self._buffers: list[torch.Tensor] = []

    @property
    def groups(self) -> list[WeightGroup]:
        return [self.rest, *self.block_groups]

    @property
    def block_bytes(self) -> list[int]:
        return [g.nbytes for g in self.block_groups]

    @property
    def tier_plan(self) -> TierPlan | None:
        """Where each block lives now: device, pinned, or mapped (None while off the device)."""
        if self.plan is None:
            return None
        return TierPlan(self.plan, tuple(not r and g.pinned for r, g in zip(self.plan.resident, self.block_groups)))

    @property
    def pageable_bytes(self) -> int:
        """Bytes of streamed blocks whose host copy is not page-locked (they go through staging)."""
        streamed = self.streamer.order if self.streamer is not None else []
        return sum(self.block_groups[i].nbytes for i in streamed if not self.block_groups[i].pinned)

    @property
    def sizes(self) -> ModelBytes:
        """What planning needs of this model (budget.py)."""
        return ModelBytes(tuple(self.block_bytes), self.rest.nbytes, tuple(self.mapped))

    @property
    def full_bytes(self) -> int:
        return self.rest.nbytes + sum(self.block_bytes)

    @property
    def on_device(self) -> bool:
        return self.plan is not None

    @property
    def device_bytes(self) -> int:
        return self.plan.device_bytes if self.plan else 0

    @property
    def mapped(self) -> list[bool]:
        """Per block: its host copy is (mostly) in a mapped file, so pinning it costs RAM."""
        return [g.mapped_bytes * 2 > g.nbytes for g in self.block_groups]

    @property
    def host_anon_bytes(self) -> int:
        return sum(g.host_anon_bytes for g in self.groups)

    def place(self, tiers: TierPlan, gates: BlockGates | None = None) -> None:
        """Copy the fixed part and the resident blocks in, and stream the others, as `tiers` says
        (budget.plan_use): its streamed blocks marked pinned may take page-locked host memory.
        `gates`: what the streamer asks before copying a block (gates.py)."""
        if self.plan is not None:
            self.evict()
        plan = tiers.device
        resident = [self.rest] + [g for g, keep in zip(self.block_groups, plan.resident) if keep]
        for group in resident:
            buffer = self.device.alloc(group.nbytes)
            self.device.compute_waits(group.copy_to(buffer))
            group.point_to(buffer)
            self._buffers.append(buffer)
        streamed = [i for i, keep in enumerate(plan.resident) if not keep]
        if streamed:
            self.streamer = BlockStreamer(self.blocks, self.block_groups, streamed, self.device,
                                          plan.slots, plan.slot_bytes, [i for i in streamed if tiers.pinned[i]],
                                          gates)
        self.plan = plan

    def use_gates(self, gates: BlockGates) -> None:
        """Placed by an earlier run's manager and kept: its streamer now asks this run's gates."""
        if self.streamer is not None:
            self.streamer.gates = gates

    def evict(self) -> None:
        """Off the device: the tensors point at the host copies again, device memory is let go."""
        if self.streamer is not None:
            self.streamer.detach()
            self.streamer = None
        for group in self.groups:
            group.point_to_host()
        self._buffers.clear()
        self.plan = None

    def abandon(self) -> None:
        """Stop managing the model without touching its tensors (someone else replaced them)."""
        if self.streamer is not None:
            self.streamer.remove_hooks()
            self.streamer = None
        self._buffers.clear()
        self.plan = None

    def intact(self) -> bool:
        return all(group.intact() for group in self.groups)
