"""Whole models on the compute device for their work, under one byte budget.

`with manager.use(a, b): ...` puts `a` and `b` on the device for the body. Models stay there
afterwards while the budget allows (all of them resident when it fits) and are evicted, least
recently used first, only when another model needs the room. A model too big for the room
left is split: its fixed part and as many blocks as fit stay, the other blocks stream (swap.py).
A nested `use` may push the outer models off the device; they come back when it ends.

Generic over torch.nn.Module: it knows nothing of what the models are for. The budget counts
everything the work may use on the device: our weights, plus `reserve_bytes` kept for
activations, which the planner never hands out to weights. What to place where is decided by
`budget.plan_use`, the same rule `app.py check` prints; `planned(model)` says what was placed.
A caller with work that needs room beside the weights (an untiled VAE decode) passes its size as
`work_bytes` and asks `short_of_room()`: what to do about it is the caller's.
"""
from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch

from .budget import BudgetError, GiB, MemoryTerms, TierPlan, plan_use, size_text
from .device import Device, cuda_device
from .gates import BlockGates
from .placement import ModelPlacement

log = logging.getLogger(__name__)

DEFAULT_RESERVE_BYTES = 3 * GiB  # activations of a large transformer step; callers should size it per workload
SAFETY_MARGIN_BYTES = GiB // 2  # free memory left alone: CUDA context growth, library workspaces, fragmentation


class ModelManager:
    def __init__(self, device: str | torch.device | Device = "cpu", budget_bytes: int | None = None,
                 reserve_bytes: int | None = None, work_bytes: int = 0, prefetch: int = 2,
                 ram_budget_bytes: int | None = None, gates: BlockGates | None = None):
        """`device` "cpu" keeps every model where it is (no GPU: everything runs on the CPU as before);
        "cuda" manages the GPU, with an automatic budget (free memory) unless one is given; a
        Device instance (e.g. SimulatedDevice) is used as it is and needs `budget_bytes`.

        `ram_budget_bytes`: host memory the managed weights may take in the process's own memory
        (packed copies, pinned copies, the staging ring). Streamed blocks whose host copy is a
        mapped file are pinned only while this allows; the rest stream from the file. None: pin
        every streamed block (up to the device's pin limit).

        `gates`: the run's "will this block run?" answers (gates.py), asked by every streamer this
        manager places; a step cache of the same run sets them. None: a set of its own."""
        self.device = _resolve(device)
        self.gates = gates if gates is not None else BlockGates()
        self.prefetch = prefetch
        self.ram_budget_bytes = None if ram_budget_bytes is None else int(ram_budget_bytes)
        self.work_bytes = int(work_bytes)  # see short_of_room()
        self._frames: list[list[torch.nn.Module]] = []
        self._clock = 0
        self._planned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its last TierPlan
        if self.device is None:
            self.budget_bytes = self.reserve_bytes = None
            return
        if reserve_bytes is None:
            reserve_bytes = DEFAULT_RESERVE_BYTES if self.device.kind == "cuda" else 0
        if budget_bytes is None:
            budget_bytes = automatic_budget(self.device)
        self.budget_bytes, self.reserve_bytes = int(budget_bytes), int(reserve_bytes)
        if self.weight_budget <= 0:
            raise BudgetError(f"A device budget of {size_text(budget_bytes)} leaves nothing for weights once "
                              f"{size_text(reserve_bytes)} are kept for activations.")

    @property
    def weight_budget(self) -> int:
        return self.budget_bytes - self.reserve_bytes

    @property
    def manages_device(self) -> bool:
        return self.device is not None

    @property
    def terms(self) -> MemoryTerms:
        return MemoryTerms(self.budget_bytes, self.reserve_bytes, self.prefetch, self.ram_budget_bytes)

    def planned(self, module: torch.nn.Module) -> TierPlan | None:
        """What this manager last placed `module` as (kept after it left the device); None: never placed."""
        return self._planned.get(module)

    def room_bytes(self) -> int | None:
        """What the budget leaves beside the weights on the device now (None without a device)."""
        return None if self.device is None else self.budget_bytes - self.device.current_bytes

    def short_of_room(self) -> bool:
        """Whether less than `work_bytes` is left beside the weights on the device now."""
        return self.device is not None and self.room_bytes() < self.work_bytes

    def placement(self, module: torch.nn.Module) -> ModelPlacement | None:
        return self.device.placements.get(module) if self.device is not None else None

    @contextmanager
    def use(self, *modules: torch.nn.Module | None) -> Iterator[None]:
        """The given models on the device for the body (None entries are skipped)."""
        wanted = list(dict.fromkeys(m for m in modules if m is not None))
        if self.device is None:
            yield
            return
        self._frames.append(wanted)
        try:
            self._ensure(wanted)
            yield
        finally:
            self._frames.pop()
            if self._frames:  # a nested use may have pushed the outer models off; they are needed again
                self._ensure([m for frame in self._frames for m in frame])

    def release(self) -> None:
        """Every model this device holds back to the host (e.g. before switching model sets)."""
        if self.device is not None:
            self.device.evict_all()

    def _placement_for(self, module: torch.nn.Module) -> ModelPlacement:
        placement = self.device.placements.get(module)
        if placement is not None and not placement.intact():
            # Moved or converted behind our back: the packed copy may be stale, so pack again.
            log.warning("%s was moved outside the memory manager; packing its weights again", type(module).__name__)
            placement.abandon()
            placement = None
        if placement is None:
            placement = ModelPlacement(module, self.device)
            self.device.placements[module] = placement
        return placement

    def _ensure(self, wanted: list[torch.nn.Module]) -> None:
        self._clock += 1
        placements = [self._placement_for(m) for m in wanted]
        terms = self.terms
        for placement in placements:
            placement.last_used = self._clock
            placement.use_gates(self.gates)
            if placement.on_device and placement.terms != terms:
                placement.evict()  # planned by a manager with another budget (e.g. the last run's): plan again
        missing = sorted((p for p in placements if not p.on_device), key=lambda p: p.full_bytes)
        if not missing:
            return
        self._make_room(sum(p.full_bytes for p in missing), placements)
        # Smallest first: small models go in whole, the largest gets what is left and streams if it must.
        host_held = self._host_held()
        self.device.limit_pinning(None if terms.ram_bytes is None else max(terms.ram_bytes - host_held, 0))
        try:
            plans = plan_use([p.sizes for p in missing], terms, self.device.current_bytes, host_held)
        except BudgetError as error:
            placement = missing[error.index]
            raise BudgetError(
                f"The device budget of {size_text(self.budget_bytes)} ({size_text(self.reserve_bytes)} of it kept "
                f"for activations, {size_text(terms.weight_bytes - error.room_bytes)} held by models in use) cannot "
                f"hold {type(wanted[placements.index(placement)]).__name__}'s fixed part "
                f"({size_text(placement.rest.nbytes)}) and one of its blocks "
                f"({size_text(max(placement.block_bytes, default=0))}). Raise the VRAM budget, or lower the "
                f"resolution so that less is kept for activations.") from None
        for placement, tiers in zip(missing, plans):
            placement.place(tiers, self.gates)
            placement.terms = terms
            module = wanted[placements.index(placement)]
            self._planned[module] = tiers
            plan = tiers.device
            log.info("%s on the %s device: %s of weights there, %d of %d blocks streamed through %d slots",
                     type(module).__name__, self.device.kind, size_text(plan.device_bytes),
                     plan.resident.count(False), len(plan.resident), plan.slots)

    def host_anon_bytes(self) -> int:
        """The managed weights' share of the process's own memory now: host copies, pinned arenas, staging."""
        placements = list(self.device.placements.values())
        packed = sum(g.packed.numel() for p in placements for g in p.groups if g.packed is not None)
        staging = self.device.staging_bytes if self.device._staging is not None else 0
        return packed + self.device.pinned_bytes + staging

    def _host_held(self) -> int:
        """Host memory the managed weights take now, the staging ring counted even before its first use."""
        staging = 0 if self.device._staging is not None else self.device.staging_bytes  # still to come
        return self.host_anon_bytes() + staging

    def _make_room(self, needed: int, keep: list[ModelPlacement]) -> None:
        """Evict until `needed` bytes are free: idle models first, then those of outer `use` frames."""
        in_use = {id(self.device.placements.get(m)) for frame in self._frames for m in frame}
        kept = {id(p) for p in keep}
        placed = [p for p in self.device.placements.values() if p.on_device and id(p) not in kept]
        idle = sorted((p for p in placed if id(p) not in in_use), key=lambda p: p.last_used)
        outer = sorted((p for p in placed if id(p) in in_use), key=lambda p: p.last_used)
        for victim in idle + outer:
            if self.weight_budget - self.device.current_bytes >= needed:
                return
            victim.evict()


def _resolve(device: str | torch.device | Device) -> Device | None:
    if isinstance(device, Device):
        return device
    device = torch.device(device)
    if device.type == "cuda":
        return cuda_device(device.index)
    return None  # the CPU (or anything else): models stay where they are


def automatic_budget(device: Device) -> int:
    """What the device can give us now: its free memory plus what we already hold there, less a margin."""
    if not hasattr(device, "free_bytes"):
        raise ValueError(f"a {device.kind} device needs an explicit budget")
    return device.free_bytes() + device.current_bytes - SAFETY_MARGIN_BYTES


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
