"""Writing a model's weights as sharded safetensors files, filled from one fixed pattern, fast.

For bench/gpu/full_set.py, which writes ~40 GB of stand-in weights. Random generators run at a few
hundred MB/s; here every tensor is copied from one pattern of N(0, 0.02) values drawn once (a
prime count of them, so rows of a matrix do not repeat one another), at the speed of memory.
Norm scales (1-D `*.weight`) get 1 + pattern, as trained ones sit near 1: activations then keep a
realistic scale instead of shrinking towards zero at every layer. Files are written by the
project's own one-tensor-at-a-time writer (memory.write_safetensors).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from memory import write_safetensors

PATTERN_ELEMENTS = 4_194_301  # a prime: 8 MB in 16-bit


class Pattern:
    """The fixed fill, cast once per dtype."""

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.values = torch.randn(PATTERN_ELEMENTS, generator=generator) * 0.02
        self._cast: dict[torch.dtype, torch.Tensor] = {}

    def tensor(self, shape, dtype: torch.dtype, offset: int, plus: float = 0.0) -> torch.Tensor:
        """A tensor of `shape` holding the pattern from element `offset` on (wrapping round), plus `plus`."""
        if dtype not in self._cast:
            self._cast[dtype] = self.values.to(dtype)
        source, count = self._cast[dtype], int(torch.Size(shape).numel())
        out = torch.empty(count, dtype=dtype)
        done, start = 0, offset % PATTERN_ELEMENTS
        while done < count:
            piece = min(PATTERN_ELEMENTS - start, count - done)
            out[done:done + piece].copy_(source[start:start + piece])
            done, start = done + piece, 0
        if plus:
            out += plus
        return out.reshape(shape)

    def like(self, name: str, tensor: torch.Tensor, offset: int) -> torch.Tensor:
        """What to store for one entry of a state dict: real tensors (buffers) as they are, parameters
        on the meta device from the pattern."""
        if not tensor.is_meta:
            return tensor
        norm_scale = tensor.dim() == 1 and name.endswith("weight")
        if tensor.is_floating_point() and tensor.element_size() >= 2:
            return self.tensor(tensor.shape, tensor.dtype, offset, plus=1.0 if norm_scale else 0.0)
        return self.tensor(tensor.shape, torch.float32, offset).to(tensor.dtype)  # none in these models


def shard_names(prefix: str, shards: int) -> list[str]:
    """The hub's names: `model.safetensors`, or `model-00001-of-00004.safetensors`..."""
    if shards == 1:
        return [f"{prefix}.safetensors"]
    return [f"{prefix}-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]


def split_in_shards(entries: dict[str, torch.Tensor], shards: int) -> list[list[str]]:
    """Names in their order, cut into `shards` runs of about equal bytes (none empty)."""
    names = list(entries)
    shards = max(1, min(shards, len(names)))
    sizes = [entries[n].numel() * entries[n].element_size() for n in names]
    total, cuts, running = sum(sizes), [], 0
    for index, size in enumerate(sizes):
        running += size
        if len(cuts) < shards - 1 and running >= total * (len(cuts) + 1) / shards and index < len(names) - 1:
            cuts.append(index + 1)
    bounds = [0, *cuts, len(names)]
    return [names[a:b] for a, b in zip(bounds, bounds[1:])]


def write_sharded(folder: Path, prefix: str, entries: dict[str, torch.Tensor], shards: int,
                  pattern: Pattern) -> int:
    """Write `entries` (meta tensors: filled from the pattern; real ones: their values) into `shards`
    files named as the hub names them, plus `<prefix>.safetensors.index.json` when more than one.
    Returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    groups = split_in_shards(entries, shards)
    names = shard_names(prefix, len(groups))
    offsets = {name: index * 7919 for index, name in enumerate(entries)}  # each tensor from another place
    weight_map, written = {}, 0
    for file_name, group in zip(names, groups):
        specs = [(n, entries[n].dtype, tuple(entries[n].shape)) for n in group]
        written += write_safetensors(folder / file_name, specs, lambda n: pattern.like(n, entries[n], offsets[n]),
                                     metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, file_name))
    if len(names) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in entries.values())},
                 "weight_map": weight_map}
        (folder / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return written
