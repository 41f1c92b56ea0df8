"""A group of weights (one block, or a model's parts outside its blocks) packed into one host buffer.

Packing once lets a whole block travel in one copy, and lets its parameters be pointed at any
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


class WeightGroup:
    def __init__(self, modules: Iterable[torch.nn.Module], device: Device, seen: set[int]):
        """Pack the parameters and buffers of `modules` not already in `seen` (ids, updated here).

        The host copy starts pageable; `pin()` moves it to page-locked memory, which copies that
        overlap compute need, once the group is known to stream again and again.
        """
        self.device = device
        self.entries: list[_Entry] = []
        offset = 0
        for module in modules:
            for sub in module.modules():
                tensors = [(p, None, n, p) for n, p in sub._parameters.items() if p is not None]
                tensors += [(None, weakref.ref(sub), n, b) for n, b in sub._buffers.items() if b is not None]
                for parameter, owner, name, tensor in tensors:
                    if id(tensor) in seen:
                        continue  # shared (tied) weights are packed once, in the first group that has them
                    seen.add(id(tensor))
                    nbytes = tensor.numel() * tensor.element_size()
                    self.entries.append(_Entry(parameter, owner, name, tensor.dtype, tensor.shape, offset, nbytes))
                    offset = align(offset + nbytes)
        self.nbytes = offset
        self.host = device.host_buffer(self.nbytes, pinned=False)
        self.pinned = False
        for entry, view in zip(self.entries, self.views(self.host)):
            view.copy_(entry.get().detach())
            entry.set(view)
        self.target = self.host  # the buffer the tensors point into now

    def pin(self) -> bool:
        """Move the host copy to page-locked memory; False when none can be had (it stays pageable)."""
        if self.pinned:
            return True
        try:
            pinned = self.device.host_buffer(self.nbytes, pinned=True)
        except PinError:
            return False
        pinned.copy_(self.host)
        if self.target is self.host:
            self.point_to(pinned)
        self.host, self.pinned = pinned, True
        return True

    def views(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        """Each packed tensor, as a view into `buffer` (host copy, a device copy or a slot)."""
        return [buffer[e.offset:e.offset + e.nbytes].view(e.dtype).view(e.shape) for e in self.entries]

    def point_to(self, buffer: torch.Tensor, views: list[torch.Tensor] | None = None) -> None:
        for entry, view in zip(self.entries, views if views is not None else self.views(buffer)):
            entry.set(view)
        self.target = buffer

    def point_to_host(self) -> None:
        self.point_to(self.host)

    def copy_to(self, buffer: torch.Tensor, after=None):
        """Queue the copy of the host bytes into a device `buffer`; returns the completion event."""
        return self.device.copy_to_device(buffer, self.host, self.pinned, after)

    def intact(self) -> bool:
        """False when someone moved or replaced our tensors (e.g. `module.to(...)`) behind our back."""
        base = self.target.data_ptr()
        for entry in self.entries:
            tensor = entry.get()
            if entry.nbytes and (tensor.data_ptr() != base + entry.offset or tensor.dtype != entry.dtype):
                return False
        return True
