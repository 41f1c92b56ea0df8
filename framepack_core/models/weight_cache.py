"""Converted weights, written once to disk and memory-mapped on every later start.

FP8 storage of the transformer, or a dtype other than the files', would otherwise be redone at
every start, and held in the process's own memory (12.9 GB for the transformer in FP8). Written
once, tensor by tensor, as a safetensors file in the app's cache folder; later starts map it.

The cache key is what the conversion reads: the source files (path, size, modification time) and
a tag naming the conversion, so new weights or another conversion never reuse a stale file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from memory import MappedFile, write_safetensors

conversions = 0  # files written by this process (tests check that a second start writes none)


def cache_root(cache_dir: Path | None = None) -> Path:
    from .tiny import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def source_key(files: list[Path], tag: str) -> str:
    parts = [tag] + [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(files)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def converted_file(source: Path | list[Path], tag: str, tensors: dict[str, torch.Tensor],
                   convert: Callable[[str, torch.Tensor], torch.Tensor], cache_dir: Path | None = None,
                   names: list[str] | None = None) -> MappedFile:
    """The mapped file of `convert(name, tensors[name])` for `names` (default: all), written if missing."""
    global conversions
    files = sorted(Path(source).glob("*.safetensors")) if isinstance(source, (str, os.PathLike)) else list(source)
    folder = cache_root(cache_dir) / "converted" / source_key(files, tag)
    path = folder / "model.safetensors"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted(tensors) if names is None else sorted(names)
        dtypes = {n: convert(n, tensors[n][:0] if tensors[n].dim() else tensors[n]).dtype for n in names}
        write_safetensors(path, [(n, dtypes[n], tuple(tensors[n].shape)) for n in names],
                          lambda n: convert(n, tensors[n]), {"tag": tag})
        conversions += 1
    return MappedFile(path)
