"""Rehearsing work at full size without its data: a device whose buffers are meta tensors, and a count of
the live bytes of every tensor the work makes.

    device = MetaDevice()                       # the same ledger, arenas and streamer as a real device
    with LiveBytes(device) as live:             # inside: every op's fresh output on the meta device counted
        with manager.use(model):
            model(*meta_inputs)                 # shapes only: a 13B forward pass takes a second
    live.peak                                   # (total, weights, slots, activations) at the highest moment

A meta tensor has a shape, a dtype and a device but no storage, so no arithmetic runs and nothing
is read; the memory code (packing, arenas, slots, streaming hooks) runs exactly as on a GPU, and
byte-for-byte the same buffers are handed out. Host copies stand for mapped files: the models a
run loads are mapped from their safetensors (the disk tier), and a meta tensor has no heap bytes.
Generic: it knows nothing of what the work is.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from .device import PIN_ARENA_BYTES, SimulatedDevice

META = torch.device("meta")


class MetaDevice(SimulatedDevice):
    """A simulated CUDA device whose buffers have no data. Pinned arenas are sized and rounded as CUDA's
    pinned allocator does (device.py), so `pinned_bytes` is what a GPU run would lock."""

    rounds_pinned = True
    meta_is_mapped = True

    def __init__(self, pin_limit_bytes: int | None = None):
        super().__init__(pin_limit_bytes, pin_arena_bytes=PIN_ARENA_BYTES)
        self.torch_device = META
        self.on_alloc = None  # called after every device buffer: a LiveBytes sees its peaks then

    def alloc(self, nbytes):
        buffer = super().alloc(nbytes)
        if self.on_alloc is not None:
            self.on_alloc()
        return buffer

    def host_buffer(self, nbytes, pinned):
        if not pinned:
            return _meta_bytes(nbytes)
        return super().host_buffer(nbytes, pinned)

    def _empty(self, nbytes):
        return _meta_bytes(nbytes)

    def _pinned(self, nbytes):
        return _meta_bytes(nbytes)

    def buffer_split(self) -> tuple[int, int]:
        """(placed weights: fixed parts and resident blocks, streaming slots) live on the device now."""
        weights = slots = 0
        for placement in list(self.placements.values()):
            weights += sum(b.numel() for b in placement._buffers)
            if placement.streamer is not None:
                slots += sum(s.numel() for s in placement.streamer.slots)
        return weights, slots


def _meta_bytes(nbytes: int) -> torch.Tensor:
    with _disable_current_modes():  # the memory code's own buffers are the ledger's, not activations
        return torch.empty(nbytes, dtype=torch.uint8, device=META)


@dataclass(frozen=True)
class Peak:
    total: int = 0
    weights: int = 0  # fixed parts and resident blocks
    slots: int = 0  # streaming slots
    activations: int = 0  # everything else the work made on the device (inputs moved there included)
    op: str = ""  # the op whose output made the peak


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors ops make on the meta device while they are alive, beside the
    device's ledger, and keeps the highest sum seen (`peak`) until `reset()`.

    A storage is counted once, however many tensors share it (views, `_unsafe_view`), and leaves the
    count when the last tensor on it is collected: on a GPU its block would go back to the allocator
    then. Ops whose output aliases an input (views, in-place ops) make nothing new."""

    def __init__(self, device: MetaDevice, scalar=None):
        """`scalar(tensor)`: the value a data-dependent read (`.item()`, `bool(t)`) of a meta tensor takes;
        None: such a read fails as it does on meta. Each answer is kept in `answered` (dtype, value)."""
        super().__init__()
        self.device = device
        self.scalar = scalar
        self.answered: dict[tuple[str, object], int] = {}
        self.live = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [bytes, tensors on it]
        self.peak = Peak()
        self.last_op = ""

    def __enter__(self):
        self.device.on_alloc = self.note
        return super().__enter__()

    def __exit__(self, *exc):
        self.device.on_alloc = None
        return super().__exit__(*exc)

    def reset(self) -> None:
        self.peak = Peak()
        self.note()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and self.scalar is not None and args[0].is_meta:
            value = self.scalar(args[0])
            key = (str(args[0].dtype).removeprefix("torch."), value)
            self.answered[key] = self.answered.get(key, 0) + 1
            return value
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor) and tensor.device.type == "meta":
                    self._track(tensor)
            self.last_op = str(func)
            self.note()
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        key = tensor.untyped_storage()._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [tensor.untyped_storage().nbytes(), 0]
            self.live += entry[0]
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self._storages[key]
            self.live -= entry[0]

    def note(self) -> None:
        """Compare now with the peak: the ledger's buffers and the live activations."""
        total = self.device.current_bytes + self.live
        if total > self.peak.total:
            weights, slots = self.device.buffer_split()
            self.peak = Peak(total, weights, slots, total - weights - slots, self.last_op)

    def rise_by(self, nbytes: int, op: str) -> None:
        """A peak `nbytes` above now, as a replayed call would reach (see `replayed`)."""
        total = self.device.current_bytes + self.live + nbytes
        if total > self.peak.total:
            weights, slots = self.device.buffer_split()
            self.peak = Peak(total, weights, slots, total - weights - slots, op)


@contextmanager
def replayed(live: LiveBytes, owner, name: str = "forward"):
    """`owner.name(...)` (a module's forward, a helper) run once per distinct input (shapes, dtypes, other
    arguments) and replayed after: the rise above the call's start that the first one reached, and a
    fresh output of its shape (or the input it returned, for a call that writes into one).

    Exact on the meta device, where what a call makes depends on its inputs' shapes alone, for work
    that streams nothing (a call that moved bytes to the device is never replayed): a tiled VAE decode
    runs its decoder on dozens of tiles of a few shapes, and blends their edges row by row."""
    seen: dict = {}
    original = getattr(owner, name)

    def call(*args, **kwargs):
        leaves = tree_leaves((args, kwargs))
        key = tuple((tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else repr(t) for t in leaves)
        if seen.get(key) is not None:
            rise, returned, shape, dtype = seen[key]
            live.rise_by(rise, f"{type(owner).__name__}.{name} (replayed)")
            return leaves[returned] if returned is not None else torch.empty(shape, dtype=dtype, device=META)
        outer, moved = live.peak, live.device.bytes_moved
        live.peak = Peak()
        live.note()
        start = live.peak.total
        out = original(*args, **kwargs)
        inner = live.peak
        live.peak = max(outer, inner, key=lambda p: p.total)
        if isinstance(out, torch.Tensor) and out.is_meta and live.device.bytes_moved == moved:
            returned = next((i for i, t in enumerate(leaves) if t is out), None)
            seen[key] = (inner.total - start, returned, out.shape, out.dtype)
        else:
            seen[key] = None
        return out

    setattr(owner, name, call)
    try:
        yield
    finally:
        delattr(owner, name)  # the class's own again
