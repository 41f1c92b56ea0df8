"""Pure planning: which blocks of a model stay on the device, which stream through it, and from where
(pinned host memory or the mapped file).

No torch here, only byte counts, so the rules can be property-tested in isolation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

GiB = 1 << 30


class BudgetError(ValueError):
    """The budget cannot hold even the part of a model that must stay on the device.

    A ValueError, so that the app shows its message to the user as it is. `index`: which of the
    models planned together did not fit (plan_use), `room_bytes`: the device room it was offered.
    """

    def __init__(self, message: str, index: int | None = None, room_bytes: int | None = None):
        super().__init__(message)
        self.index, self.room_bytes = index, room_bytes


# A pinned host copy may take up to two alignments more than its bytes (device.py's arenas align
# each copy's start and end to 256 bytes).
PIN_SLACK_BYTES = 2 * 256


@dataclass(frozen=True)
class MemoryTerms:
    """The numbers one run's placements are planned under. What the caller knows of its work
    (activations, workspaces) comes in as `reserve_bytes`; this module knows nothing of it."""
    budget_bytes: int  # the device memory for weights and work together
    reserve_bytes: int = 0  # kept for activations: never handed out to weights
    prefetch: int = 2  # streamed blocks copied ahead of the one running
    ram_bytes: int | None = None  # host memory the managed weights may take (None: pin every streamed block)

    @property
    def weight_bytes(self) -> int:
        return self.budget_bytes - self.reserve_bytes


@dataclass(frozen=True)
class ModelBytes:
    """What planning needs of one model: its blocks' bytes, the rest's, and which blocks are mapped files."""
    block_bytes: tuple[int, ...]
    other_bytes: int
    mapped: tuple[bool, ...] | None = None  # None: every block's host copy is a mapped file

    @property
    def total_bytes(self) -> int:
        return self.other_bytes + sum(self.block_bytes)


@dataclass(frozen=True)
class BlockPlan:
    block_bytes: tuple[int, ...]
    other_bytes: int  # parameters outside the block lists: always on the device while placed
    resident: tuple[bool, ...]  # per block: kept on the device for as long as the model is placed
    slots: int  # device buffers that the streamed blocks take turns in (0: nothing streams)
    slot_bytes: int

    @property
    def prefetch(self) -> int:
        """How many streamed blocks are copied ahead of the one running."""
        return max(self.slots - 1, 0)

    @property
    def resident_bytes(self) -> int:
        return sum(b for b, r in zip(self.block_bytes, self.resident) if r)

    @property
    def streamed_bytes(self) -> int:
        """Bytes copied to the device per forward pass: each streamed block once."""
        return sum(self.block_bytes) - self.resident_bytes

    @property
    def device_bytes(self) -> int:
        return self.other_bytes + self.resident_bytes + self.slots * self.slot_bytes

    @property
    def streams(self) -> bool:
        return self.slots > 0


def spread_order(count: int) -> list[int]:
    """0..count-1 in bit-reversed order: every prefix is spread evenly over the range."""
    if count <= 1:
        return list(range(count))
    bits = (count - 1).bit_length()
    order = [int(f"{i:0{bits}b}"[::-1], 2) for i in range(1 << bits)]
    return [i for i in order if i < count]


def residency_order(block_bytes: Sequence[int]) -> list[int]:
    """The order in which blocks earn residency: the largest first, spread evenly within a size.

    Larger blocks (a transformer's double-stream blocks) carry more bytes per unit of compute,
    so their copies are the hardest to hide. Spreading residents between streamed blocks of the
    same kind gives every copy some resident compute to hide behind, instead of bunching them.
    """
    order: list[int] = []
    for size in sorted(set(block_bytes), reverse=True):
        same = [i for i, b in enumerate(block_bytes) if b == size]
        order += [same[j] for j in spread_order(len(same))]
    return order


def plan_blocks(block_bytes: Sequence[int], other_bytes: int, budget_bytes: int, reserve_bytes: int = 0,
                prefetch: int = 2) -> BlockPlan:
    """Decide residency for one model under `budget_bytes`, of which `reserve_bytes` is kept for activations.

    Rules, each a tested property: everything is resident when it fits; the plan never uses more
    than the budget; a larger budget never streams more bytes. Streaming needs `prefetch + 1`
    slots of the largest block's size; until the budget holds that many, everything streams
    through the slots there are (down to one: copy, run, copy, run) and nothing else is resident,
    which keeps the bytes streamed monotone in the budget.
    """
    blocks = tuple(int(b) for b in block_bytes)
    if any(b < 0 for b in blocks) or other_bytes < 0 or prefetch < 0:
        raise ValueError("byte counts and prefetch must not be negative")
    available = budget_bytes - reserve_bytes - other_bytes
    if sum(blocks) <= available:
        return BlockPlan(blocks, other_bytes, (True,) * len(blocks), 0, 0)
    slot_bytes = max(blocks, default=0)
    wanted_slots = min(prefetch + 1, len(blocks))  # more slots than blocks would never be used
    slots = min(wanted_slots, available // slot_bytes) if slot_bytes else 0
    if slots < 1:
        raise BudgetError(
            f"A device budget of {size_text(budget_bytes)} (with {size_text(reserve_bytes)} kept for "
            f"activations) cannot hold this model's fixed part ({size_text(other_bytes)}) plus one of its "
            f"blocks ({size_text(slot_bytes)}). Raise the VRAM budget or lower the resolution.")
    resident = [False] * len(blocks)
    if slots == wanted_slots:
        room = available - slots * slot_bytes
        for index in residency_order(blocks):
            if blocks[index] > room:
                break  # a prefix, not best-fit: skipping ahead could make a larger budget stream more
            resident[index] = True
            room -= blocks[index]
    return BlockPlan(blocks, other_bytes, tuple(resident), slots, slot_bytes)


def plan_pinning(streamed_bytes: Sequence[int], already_host: Sequence[bool], room_bytes: int | None) -> tuple[bool, ...]:
    """Which streamed blocks (in run order) get a page-locked host copy; the others stream from their mapped file.

    `already_host`: the block's host copy is already in the process's memory (packed, not mapped),
    so pinning it only moves it and costs no RAM. Mapped blocks cost their size; they are pinned in
    run order while `room_bytes` holds them, a prefix (so a larger room never pins fewer bytes).
    None: no RAM budget, pin everything (the device's own pin limit still applies).
    """
    if room_bytes is None:
        return (True,) * len(streamed_bytes)
    pinned, room = [], room_bytes
    for nbytes, free in zip(streamed_bytes, already_host):
        pinned.append(free)
    for index, (nbytes, free) in enumerate(zip(streamed_bytes, already_host)):
        if free:
            continue
        if nbytes > room:
            break
        pinned[index] = True
        room -= nbytes
    return tuple(pinned)


@dataclass(frozen=True)
class TierPlan:
    """Where every block of one model lives: on the device, streamed from pinned memory, or from its file."""
    device: BlockPlan
    pinned: tuple[bool, ...]  # per block; True only for streamed blocks

    @property
    def streamed_from_pinned(self) -> int:
        return sum(b for b, p in zip(self.device.block_bytes, self.pinned) if p)

    @property
    def streamed_from_disk(self) -> int:
        return self.device.streamed_bytes - self.streamed_from_pinned

    def tiers(self) -> list[str]:
        return ["device" if r else ("pinned" if p else "mapped") for r, p in zip(self.device.resident, self.pinned)]


def plan_tiers(block_bytes: Sequence[int], other_bytes: int, vram_bytes: int, ram_room_bytes: int | None,
               reserve_bytes: int = 0, prefetch: int = 2, mapped: Sequence[bool] | None = None,
               pin_slack: int = 0) -> TierPlan:
    """Both budgets at once: `plan_blocks` for the device, then `plan_pinning` for what streams.

    `ram_room_bytes` is what the RAM budget leaves for pinned copies of mapped blocks; each copy is
    counted `pin_slack` bytes larger than its block.
    """
    device = plan_blocks(block_bytes, other_bytes, vram_bytes, reserve_bytes, prefetch)
    mapped = list(mapped) if mapped is not None else [True] * len(device.block_bytes)
    streamed = [i for i, r in enumerate(device.resident) if not r]
    pins = plan_pinning([device.block_bytes[i] + pin_slack for i in streamed], [not mapped[i] for i in streamed],
                        ram_room_bytes)
    pinned = [False] * len(device.block_bytes)
    for index, pin in zip(streamed, pins):
        pinned[index] = pin
    return TierPlan(device, tuple(pinned))


def plan_use(models: Sequence[ModelBytes], terms: MemoryTerms, device_held: int = 0,
             host_held: int = 0) -> list[TierPlan]:
    """Where each of `models`, used together and placed in this order, lives: the one planning rule.

    The memory manager places by it (the smallest model first, `device_held` being what stays on
    the device beside them), and `app.py check` prints it for each stage of a run (nothing else
    held), so what check says is what the manager places. Each model gets the weight budget (the
    budget less the activation reserve) less what is held on the device, the earlier models of the
    call included; its streamed mapped blocks are pinned while the RAM budget, less `host_held`
    (the managed weights' host memory already taken), holds them. Raises BudgetError (with `index`)
    for the first model whose fixed part and one slot do not fit.
    """
    plans = []
    pin_room = None if terms.ram_bytes is None else max(terms.ram_bytes - host_held, 0)
    for index, model in enumerate(models):
        room = terms.weight_bytes - device_held
        try:
            plan = plan_tiers(model.block_bytes, model.other_bytes, room, pin_room, 0, terms.prefetch, model.mapped,
                              PIN_SLACK_BYTES)
        except BudgetError as error:
            raise BudgetError(str(error), index, room) from None
        plans.append(plan)
        device_held += plan.device.device_bytes
    return plans


def size_text(nbytes: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} bytes"


def activation_bytes(tokens: int, width: int, element_bytes: int = 2, factor: int = 24) -> int:
    """A rough upper estimate of a transformer's activation memory for one forward pass.

    The live set inside one block is a few copies of the hidden states plus the MLP's wider
    intermediates (about `factor` hidden-sized tensors at the peak, counting norms, q/k/v and
    their rotated copies, the 4x MLP and its activation). Benchmarks should confirm it per model.
    """
    return int(tokens) * int(width) * int(element_bytes) * int(factor)
