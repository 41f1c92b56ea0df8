"""A group of weights (one block, or a model's parts outside its blocks): its host copy, and copies of it on a device.

Packing once (or leaving mapped tensors in their file) lets a whole block travel in one go, and lets its parameters be pointed at any
device buffer big enough (a streaming slot) without allocating anything per forward pass.

Weights are treated as read-only: the host copy is the truth, so taking a group off the device
is only pointing its tensors back at the host copy. (Training a placed model would update a
device copy that the next eviction forgets.)
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterable

import torch

from .device import Device, PinError, align
from .mapped import is_mapped


@dataclass
class _Entry:
    parameter: torch.nn.Parameter | None  # a parameter, or else a buffer of `owner` called `name`
    owner: weakref.ref | None  # weak: a placement must not keep its model alive
    name: str
    dtype: torch.dtype
    shape: torch.Size
    offset: int
    nbytes: int

    def get(self) -> torch.Tensor:
        return self.parameter if self.parameter is not None else self.owner()._buffers[self.name]

    def set(self, tensor: torch.Tensor) -> None:
        if self.parameter is not None:
            self.parameter.data = tensor
        else:
            self.owner()._buffers[self.name] = tensor


def group_tensors(modules: Iterable[torch.nn.Module], seen: set[int]):
    """(submodule, parameter or None, owner ref or None, name, tensor) of every tensor of `modules` not
    in `seen` (ids, updated here), in the order a group lays them out."""
    for module in modules:
        for sub in module.modules():
            tensors = [(p, None, n, p) for n, p in sub._parameters.items() if p is not None]
            tensors += [(None, weakref.ref(sub), n, b) for n, b in sub._buffers.items() if b is not None]
            for parameter, owner, name, tensor in tensors:
                if id(tensor) in seen:
                    continue  # shared (tied) weights are packed once, in the first group that has them
                seen.add(id(tensor))
                yield sub, parameter, owner, name, tensor


def layout_bytes(modules: Iterable[torch.nn.Module], seen: set[int], tensor_bytes=None) -> int:
    """The device bytes a WeightGroup of `modules` would take (every tensor aligned), without making one:
    works on the meta device. `tensor_bytes(submodule, name, tensor)`: a tensor's size if not its own."""
    total = 0
    for sub, _, _, name, tensor in group_tensors(modules, seen):
        total = align(total + (tensor_bytes(sub, name, tensor) if tensor_bytes else tensor.numel() * tensor.element_size()))
    return total


class WeightGroup:
    def __init__(self, modules: Iterable[torch.nn.Module], device: Device, seen: set[int]):
        """Gather the parameters and buffers of `modules` not already in `seen` (ids, updated here).

        Tensors in a mapped file stay there (no copy: the file is their host copy, and the OS page
        cache holds what fits); the others are packed into one pageable host buffer. `pin()` later
        moves the whole group to page-locked memory, which copies that overlap compute need, once
        the group is known to stream again and again and the RAM budget allows it.
        """
        self.device = device
        self.entries: list[_Entry] = []
        self.sources: list[torch.Tensor | None] = []  # per entry: the mapped tensor it stays in, or None
        offset = packed_bytes = 0
        for _, parameter, owner, name, tensor in group_tensors(modules, seen):
            nbytes = tensor.numel() * tensor.element_size()
            self.entries.append(_Entry(parameter, owner, name, tensor.dtype, tensor.shape, offset, nbytes))
            # A rehearsal's meta weights stand for a run's mapped files (rehearsal.py).
            mapped = (is_mapped(tensor) or tensor.is_meta and device.meta_is_mapped) and tensor.is_contiguous()
            self.sources.append(tensor.detach() if mapped else None)
            if not mapped:
                packed_bytes = align(packed_bytes + nbytes)
            offset = align(offset + nbytes)
        self.nbytes = offset  # the device layout: every tensor aligned, in order
        self.mapped_bytes = sum(e.nbytes for e, s in zip(self.entries, self.sources) if s is not None)
        # Packed tensors in a pageable buffer of their own (the whole group's layout when none is mapped).
        self.packed = device.host_buffer(packed_bytes, pinned=False) if packed_bytes else None
        self.pieces: list[tuple[int, torch.Tensor]] = []  # (device offset, host bytes) to copy, in order
        self._host_views: list[torch.Tensor] = []
        packed_at = 0
        for entry, source in zip(self.entries, self.sources):
            if source is None:
                raw = self.packed[packed_at:packed_at + entry.nbytes]
                view = raw.view(entry.dtype).view(entry.shape)
                view.copy_(entry.get().detach())
                packed_at = align(packed_at + entry.nbytes)
            else:
                view = source
                raw = source.reshape(-1).view(torch.uint8) if entry.nbytes else source
            self.pieces.append((entry.offset, raw))
            self._host_views.append(view)
        self.pinned_host: torch.Tensor | None = None
        self._pointed: list[int] = []
        self.point_to_host()

    @property
    def pinned(self) -> bool:
        return self.pinned_host is not None

    @property
    def host_anon_bytes(self) -> int:
        """Bytes of the process's own memory this group's host copy takes (mapped bytes take none)."""
        return self.nbytes if self.pinned else (self.packed.numel() if self.packed is not None else 0)

    def pin(self) -> bool:
        """Move the host copy to page-locked memory; False when none can be had (it stays where it is)."""
        if self.pinned:
            return True
        try:
            pinned = self.device.host_buffer(self.nbytes, pinned=True)
        except PinError:
            return False
        for offset, raw in self.pieces:
            pinned[offset:offset + raw.numel()].copy_(raw)
        on_host = self.on_host
        self.pinned_host, self.packed = pinned, None
        self._host_views = self.views(pinned)
        self.pieces = [(0, pinned)]
        if on_host:
            self.point_to_host()
        return True

    @property
    def on_host(self) -> bool:
        return all(ptr == v.data_ptr() for ptr, v in zip(self._pointed, self._host_views))

    def views(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor, as a view into `buffer` in the device layout (a device copy, a slot, the pinned copy)."""
        return [buffer[e.offset:e.offset + e.nbytes].view(e.dtype).view(e.shape) for e in self.entries]

    def point_to(self, buffer: torch.Tensor | None, views: list[torch.Tensor] | None = None) -> None:
        views = views if views is not None else self.views(buffer)
        for entry, view in zip(self.entries, views):
            entry.set(view)
        self._pointed = [v.data_ptr() for v in views]

    def point_to_host(self) -> None:
        self.point_to(None, self._host_views)

    def copy_to(self, buffer: torch.Tensor, after=None):
        """Queue the copy of the host bytes into a device `buffer`; returns the completion event."""
        if self.pinned:
            return self.device.copy_to_device(buffer, self.pinned_host, True, after)
        return self.device.copy_pieces_to_device(buffer, self.nbytes, self.pieces, after)

    def intact(self) -> bool:
        """False when someone moved or replaced our tensors (e.g. `module.to(...)`) behind our back."""
        for entry, pointer in zip(self.entries, self._pointed):
            tensor = entry.get()
            if entry.nbytes and (tensor.data_ptr() != pointer or tensor.dtype != entry.dtype):
                return False
        return True
