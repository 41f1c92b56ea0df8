"""Where placed weights live: a CUDA device, or a simulated one that keeps every tensor on the CPU.

Both offer the same few operations (allocate, copy host->device on a side stream, events for
ordering) and keep the same ledger, so the streaming code has one path, tested without a GPU:
`current_bytes` (our buffers alive on the device now), `peak_bytes`, `bytes_moved`.
"""
from __future__ import annotations

import itertools
import os
import weakref

import torch

from .cap import configure_allocator

STAGING_BYTES = 32 << 20  # per staging buffer; two of them alternate
# torch's pinned allocator rounds every request up to a power of two (a 283 MB block would lock
# 512 MB), so host copies are carved out of power-of-two arenas instead, first fit.
PIN_ARENA_BYTES = 2 << 30
OPEN_ARENAS = 4  # older arenas take no more groups; the groups in them keep them alive
ALIGN = 256  # bytes; every tensor starts aligned, as fresh allocations would (fast kernels, valid dtype views)
MiB = 1 << 20


def align(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


def aligned_slice(buffer: torch.Tensor, start: int, nbytes: int) -> torch.Tensor:
    """`nbytes` of a byte tensor from `start` moved up to the next ALIGN-aligned address."""
    start = align(buffer.data_ptr() + start) - buffer.data_ptr()
    return buffer[start:start + nbytes]


def cpu_bytes(nbytes: int) -> torch.Tensor:
    """A host byte buffer at an aligned address (CPU allocations are only 64-byte aligned)."""
    return aligned_slice(torch.empty(nbytes + ALIGN, dtype=torch.uint8), 0, nbytes)


class PinError(RuntimeError):
    """Page-locked host memory could not be had (or the pin limit is reached)."""


class Device:
    kind = "abstract"
    rounds_pinned = True  # torch's pinned allocator rounds each allocation up to a power of two
    meta_is_mapped = False  # a meta host tensor stands for a mapped file's (memory/rehearsal.py)

    def __init__(self, torch_device: str | torch.device, pin_limit_bytes: int | None = None,
                 staging_bytes: int = STAGING_BYTES, pin_arena_bytes: int = PIN_ARENA_BYTES):
        self.torch_device = torch.device(torch_device)
        # module -> ModelPlacement. Weak keys: a model that is dropped drops its placement, and its
        # device buffers leave the ledger when they are collected.
        self.placements: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.pin_limit_bytes = pin_limit_bytes
        self.own_pin_limit_bytes = pin_limit_bytes  # the device's own limit, before any RAM budget
        self.pinned_bytes = 0
        self.peak_bytes = 0
        self.bytes_moved = 0
        self._live: dict[int, int] = {}  # allocation id -> bytes; finalizers remove entries
        self._ids = itertools.count()
        self._staging_bytes = staging_bytes
        self._staging: list[torch.Tensor] | None = None
        self._staging_done: list = []
        self._arena_bytes = pin_arena_bytes
        self._arenas: list[list] = []  # [pinned byte tensor, bytes handed out]

    # -- ledger ---------------------------------------------------------------------------
    @property
    def current_bytes(self) -> int:
        return sum(self._live.values())

    def alloc(self, nbytes: int) -> torch.Tensor:
        """A device byte buffer, counted in the ledger until it is garbage."""
        buffer = self._empty(nbytes)
        key = next(self._ids)
        self._live[key] = nbytes
        weakref.finalize(buffer, self._live.pop, key, None)
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return buffer

    def evict_all(self) -> None:
        """Every placed model back to its host copy (e.g. before switching model sets)."""
        for placement in list(self.placements.values()):
            if placement.on_device:
                placement.evict()

    def reset_counters(self) -> None:
        self.peak_bytes = self.current_bytes
        self.bytes_moved = 0

    # -- host memory ----------------------------------------------------------------------
    def limit_pinning(self, room_bytes: int | None) -> None:
        """Let pinned arenas grow by at most `room_bytes` more (a RAM budget's room); None: the device's own limit."""
        limits = [self.own_pin_limit_bytes, None if room_bytes is None else self.pinned_bytes + room_bytes]
        limits = [x for x in limits if x is not None]
        self.pin_limit_bytes = min(limits) if limits else None

    def host_buffer(self, nbytes: int, pinned: bool) -> torch.Tensor:
        """A host byte buffer; raises PinError when a pinned one cannot be had."""
        if not pinned:
            return cpu_bytes(nbytes)
        arena = next((a for a in self._arenas if align(a[1]) + nbytes + ALIGN <= a[0].numel()), None)
        if arena is None:
            wanted = nbytes + ALIGN
            size = max(self._arena_bytes, 1 << (wanted - 1).bit_length() if self.rounds_pinned else align(wanted))
            if self.pin_limit_bytes is not None and self.pinned_bytes + size > self.pin_limit_bytes:
                size = align(wanted)  # the last room under the limit: an arena of exactly this group
            if self.pin_limit_bytes is not None and self.pinned_bytes + size > self.pin_limit_bytes:
                raise PinError(f"pin limit of {self.pin_limit_bytes / MiB:.0f} MiB reached")
            arena = [self._pinned(size), 0]
            self.pinned_bytes += size
            self._arenas = [*self._arenas, arena][-OPEN_ARENAS:]
        buffer = aligned_slice(arena[0], arena[1], nbytes)
        arena[1] = buffer.data_ptr() - arena[0].data_ptr() + nbytes
        return buffer

    # -- copies ---------------------------------------------------------------------------
    def copy_to_device(self, dst: torch.Tensor, src: torch.Tensor, src_pinned: bool, after=None):
        """Queue host->device byte copy on the copy stream; returns an event marking its end.

        The copy stream first waits for `after` (an event), or, when None, for all work queued
        so far on the compute stream: a fresh buffer may reuse memory that queued kernels still
        read. Pageable sources go through two small pinned staging buffers in turn, because an
        asynchronous copy needs page-locked memory; the CPU waits only for a staging buffer's
        previous copy to finish before refilling it.
        """
        nbytes = src.numel()
        self.bytes_moved += nbytes
        self._copy_waits(after)
        if src_pinned:
            return self._copy(dst[:nbytes], src)
        staging = self._staging_buffers()
        event = None
        for index, start in enumerate(range(0, nbytes, self._staging_bytes)):
            slot = index % len(staging)
            self._host_waits(self._staging_done[slot])
            part = src[start:start + self._staging_bytes]
            chunk = staging[slot][:part.numel()]
            chunk.copy_(part)
            event = self._staging_done[slot] = self._copy(dst[start:start + part.numel()], chunk)
        return event

    def copy_pieces_to_device(self, dst: torch.Tensor, nbytes: int, pieces: list[tuple[int, torch.Tensor]],
                              after=None):
        """Like copy_to_device for a host copy in pieces: (offset in `dst`, byte tensor), in offset order.

        The pieces (tensors in a mapped file, or a packed buffer) are gathered window by window into
        the pinned staging ring in `dst`'s layout, and each window goes over in one copy, so a block
        of many tensors costs a few large copies, and its bytes never pass through anonymous memory
        larger than the ring. Reading a mapped piece may page it in from disk: that is the disk tier.
        """
        if len(pieces) == 1 and pieces[0][0] == 0 and pieces[0][1].numel() == nbytes:
            return self.copy_to_device(dst, pieces[0][1], False, after)
        self.bytes_moved += nbytes
        self._copy_waits(after)
        staging = self._staging_buffers()
        event, first = None, 0
        for index, start in enumerate(range(0, nbytes, self._staging_bytes)):
            end = min(start + self._staging_bytes, nbytes)
            slot = index % len(staging)
            self._host_waits(self._staging_done[slot])
            chunk = staging[slot][:end - start]
            while first < len(pieces) and pieces[first][0] + pieces[first][1].numel() <= start:
                first += 1
            for offset, raw in pieces[first:]:
                if offset >= end:
                    break
                lo, hi = max(offset, start), min(offset + raw.numel(), end)
                chunk[lo - start:hi - start].copy_(raw[lo - offset:hi - offset])
            event = self._staging_done[slot] = self._copy(dst[start:end], chunk)
        return event

    @property
    def staging_bytes(self) -> int:
        """Pinned bytes of the staging ring (allocated on the first staged copy)."""
        return self._staging_bytes * 2

    def _staging_buffers(self) -> list[torch.Tensor]:
        if self._staging is None:
            self._staging = [self._pinned(self._staging_bytes) for _ in range(2)]
            self._staging_done = [None, None]
        return self._staging

    # -- operations each kind of device provides --------------------------------------------
    def _empty(self, nbytes: int) -> torch.Tensor:
        raise NotImplementedError

    def _pinned(self, nbytes: int) -> torch.Tensor:
        raise NotImplementedError

    def _copy(self, dst: torch.Tensor, src: torch.Tensor):
        raise NotImplementedError

    def _copy_waits(self, event) -> None:
        raise NotImplementedError

    def _host_waits(self, event) -> None:
        raise NotImplementedError

    def compute_waits(self, event) -> None:
        """The compute stream waits (on the device, not the CPU) for `event`."""
        raise NotImplementedError

    def compute_event(self):
        """An event marking all work queued on the compute stream so far."""
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError


def default_pin_limit() -> int | None:
    """Three quarters of the physical memory: page-locked memory cannot be swapped out, and the
    rest of the system (and the models' pageable parts) still need room. None where unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4
    except (AttributeError, ValueError, OSError):
        return None


class CudaDevice(Device):
    kind = "cuda"

    def __init__(self, index: int | None = None, pin_limit_bytes: int | None = None):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available on this machine")
        configure_allocator()  # before CUDA starts (current_device starts it): it reads the configuration once
        index = torch.cuda.current_device() if index is None else index
        super().__init__(torch.device("cuda", index),
                         default_pin_limit() if pin_limit_bytes is None else pin_limit_bytes)
        self.copy_stream = torch.cuda.Stream(self.torch_device)

    def free_bytes(self) -> int:
        """Free device memory, counting blocks torch's caching allocator holds but does not use."""
        cached = torch.cuda.memory_reserved(self.torch_device) - torch.cuda.memory_allocated(self.torch_device)
        return torch.cuda.mem_get_info(self.torch_device)[0] + cached

    def _empty(self, nbytes):
        return torch.empty(nbytes, dtype=torch.uint8, device=self.torch_device)

    def _pinned(self, nbytes):
        try:
            return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        except RuntimeError as error:
            raise PinError(str(error)) from error

    def _copy(self, dst, src):
        with torch.cuda.stream(self.copy_stream):
            dst.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record(self.copy_stream)
        return event

    def _copy_waits(self, event):
        if event is None:
            self.copy_stream.wait_stream(torch.cuda.current_stream(self.torch_device))
        else:
            self.copy_stream.wait_event(event)

    def _host_waits(self, event):
        if event is not None:
            event.synchronize()

    def compute_waits(self, event):
        if event is not None:
            torch.cuda.current_stream(self.torch_device).wait_event(event)

    def compute_event(self):
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.torch_device))
        return event

    def synchronize(self):
        torch.cuda.synchronize(self.torch_device)


_cuda_devices: dict[int, CudaDevice] = {}


def cuda_device(index: int | None = None) -> CudaDevice:
    """One CudaDevice per GPU, so that every manager in the process shares its ledger and placements."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available on this machine")
    configure_allocator()  # before CUDA starts, as in CudaDevice
    index = torch.cuda.current_device() if index is None else index
    if index not in _cuda_devices:
        _cuda_devices[index] = CudaDevice(index)
    return _cuda_devices[index]


POISON = 0xFF  # what a simulated copy's destination holds until it lands: NaN in bf16, fp16, fp32 and fp8


class _SimulatedEvent:
    """The end of the simulated copy stream's `seq`-th copy (and of every copy queued before it)."""

    def __init__(self, seq: int):
        self.seq = seq


class SimulatedDevice(Device):
    """A device for machines without a GPU: tensors stay on the CPU, and so does the compute.

    Everything else (packing, slots, staging, hooks, the ledger) runs exactly as on CUDA.
    `pin_limit_bytes` makes pinning fail past a size, to exercise the pageable fallback.

    `ordered=False`: copies happen at once and waits do nothing. `ordered=True` simulates the copy
    stream's asynchrony: a copy's destination holds POISON from the moment it is queued, and the copy
    lands (reading its source then, as the GPU's copy engine would) only when an event at or after it
    is waited on (`compute_waits`, the host's wait for a staging buffer, `synchronize`). So a missing
    wait reads poison, and a staging buffer refilled before its copy was waited for lands the wrong
    bytes: ordering mistakes give wrong numbers on the CPU instead of corrupt frames on a GPU.
    """

    kind = "simulated"
    rounds_pinned = False

    def __init__(self, pin_limit_bytes: int | None = None, staging_bytes: int = STAGING_BYTES,
                 pin_arena_bytes: int = 64 * MiB, ordered: bool = False):
        super().__init__("cpu", pin_limit_bytes, staging_bytes, pin_arena_bytes)
        self._buffers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.ordered = ordered
        self._queued: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (seq, dst, src), in stream order
        self._seq = 0
        self.landed_on_wait = 0  # copies that landed because something waited for them (ordered mode)

    def alloc(self, nbytes):
        buffer = super().alloc(nbytes)
        self._buffers[id(buffer)] = buffer
        return buffer

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` lies inside one of this device's live buffers (for tests)."""
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        return any(b.data_ptr() <= start and end <= b.data_ptr() + b.numel() for b in list(self._buffers.values()))

    @property
    def copies_in_flight(self) -> int:
        return len(self._queued)

    def _empty(self, nbytes):
        return cpu_bytes(nbytes)

    def _pinned(self, nbytes):
        return cpu_bytes(nbytes)

    def _copy(self, dst, src):
        if not self.ordered:
            dst.copy_(src)
            return None
        self._seq += 1
        dst.fill_(POISON)
        self._queued.append((self._seq, dst, src))
        return _SimulatedEvent(self._seq)

    def _land(self, event) -> None:
        """Every copy queued up to `event` lands, in stream order."""
        while self._queued and (event is None or self._queued[0][0] <= event.seq):
            _, dst, src = self._queued.pop(0)
            dst.copy_(src)
            self.landed_on_wait += 1

    def _copy_waits(self, event):
        pass  # the compute it would wait for already ran: the CPU computes synchronously

    def _host_waits(self, event):
        if event is not None:
            self._land(event)

    def compute_waits(self, event):
        if event is not None:
            self._land(event)

    def compute_event(self):
        return None

    def synchronize(self):
        self._land(None)
