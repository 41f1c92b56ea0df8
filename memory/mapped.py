"""Weights that stay in their safetensors files: memory-mapped, never copied into the process's own memory.

A mapped tensor's pages belong to the OS page cache (file-backed, `RssFile`), not to the process's
anonymous memory (`RssAnon`): the OS keeps what fits and drops what it must, and reads it back
from the file when it is touched again. So a model larger than the RAM that may be spent on it
can still be pointed at, block by block, and copied to the device through a small pinned ring.

The mapping is private (copy-on-write): weights are read-only here, and a stray write would cost
a page of anonymous memory, never corrupt the file.

safetensors' own `safe_open(...).get_tensor` copies each tensor into fresh memory, which is
exactly what must not happen here; the format is simple enough to map directly
(https://github.com/huggingface/safetensors#format: 8-byte little-endian header length, a JSON
header of name -> dtype, shape, data_offsets, then the bytes).
"""
from __future__ import annotations

import json
import os
import struct
import threading
from bisect import bisect_right
from pathlib import Path
from typing import Callable, Iterable

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}

# Address ranges of live mappings, so that any tensor can be asked whether it lives in a file.
# Ranges are forgotten only when their MappedFile is closed: a model keeps its files open for as
# long as its parameters point into them.
_lock = threading.Lock()
_starts: list[int] = []
_ends: dict[int, int] = {}


def is_mapped(tensor: torch.Tensor) -> bool:
    """Whether `tensor`'s bytes lie in a mapped file (the OS page cache) rather than the process's heap."""
    if tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    # A view of a mapping shares the mapping's own storage: same start, same size. Asking the storage
    # (not just where the bytes are) keeps a heap tensor that landed on the addresses of a mapping
    # freed since from being taken for a mapped one.
    storage = tensor.untyped_storage()
    start = storage.data_ptr()
    with _lock:
        return _ends.get(start) == start + storage.nbytes()


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > 100 << 20:
            raise ValueError(f"{path} does not look like a safetensors file (header of {length} bytes)")
        header = json.loads(file.read(length))
    return header, 8 + length


class MappedFile:
    """One safetensors file mapped into memory; `tensors` are views into the mapping (no copy)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        header, start = read_header(self.path)
        self.metadata = header.pop("__metadata__", {}) or {}
        size = self.path.stat().st_size
        self.storage = torch.UntypedStorage.from_file(str(self.path), shared=False, nbytes=size)
        base = torch.empty(0, dtype=torch.uint8).set_(self.storage)
        self.tensors: dict[str, torch.Tensor] = {}
        for name, info in header.items():
            dtype = DTYPES[info["dtype"]]
            begin, end = (start + o for o in info["data_offsets"])
            raw = base[begin:end]
            if begin % dtype.itemsize:  # not aligned for a typed view: copy this one (rare, small)
                raw = raw.clone()
            self.tensors[name] = raw.view(dtype).view(info["shape"])
        self._range = (base.data_ptr(), base.data_ptr() + size)
        with _lock:
            insert = bisect_right(_starts, self._range[0])
            _starts.insert(insert, self._range[0])
            _ends[self._range[0]] = self._range[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def close(self) -> None:
        with _lock:
            if self._range[0] in _ends:
                _starts.remove(self._range[0])
                del _ends[self._range[0]]


def write_safetensors(path: str | os.PathLike, specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
                      make: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> int:
    """Write a safetensors file one tensor at a time: `make(name)` is called once per name, in file order.

    Never holds more than one tensor, so a converted or generated model larger than memory can
    be written. Tensors are ordered by element size, largest first, so that every one starts at an
    address its dtype can be viewed at (the format allows no padding between tensors). Written to
    a temporary name and renamed, so a crash leaves no half file. Returns the file's size.
    """
    specs = sorted(((n, d, tuple(s)) for n, d, s in specs), key=lambda s: -s[1].itemsize)
    header, offset = {}, 0
    for name, dtype, shape in specs:
        nbytes = dtype.itemsize * int(torch.Size(shape).numel())
        header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as safetensors' own writer does
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text)
        for name, dtype, shape in specs:
            tensor = make(name).detach().to("cpu").contiguous()
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                raise ValueError(f"{name}: made {tensor.dtype} {tuple(tensor.shape)}, announced {dtype} {shape}")
            if tensor.numel():
                file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    return path.stat().st_size


def map_folder(folder: str | os.PathLike) -> tuple[list[MappedFile], dict[str, torch.Tensor]]:
    """Every safetensors file of a folder (a model's shards), mapped; their tensors by name."""
    files = [MappedFile(path) for path in sorted(Path(folder).glob("*.safetensors"))]
    tensors: dict[str, torch.Tensor] = {}
    for mapped in files:
        tensors.update(mapped.tensors)
    return files, tensors


def bind_mapped(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                convert: Callable[[str, torch.Tensor, torch.dtype], torch.Tensor] | None = None) -> list[str]:
    """Point a model's parameters and persistent buffers (built on the meta device) at mapped tensors.

    Nothing is copied where the file's dtype is the model's; otherwise `convert(name, tensor, dtype)`
    gives the tensor to use (default: a converted copy in memory). Returns the names the model has
    and the files lack (the caller decides whether that is an error); those stay as they were.
    """
    missing = []
    state = module.state_dict(keep_vars=True)
    for name, current in state.items():
        source = tensors.get(name)
        if source is None or tuple(source.shape) != tuple(current.shape):
            missing.append(name)
            continue
        if source.dtype != current.dtype:
            source = convert(name, source, current.dtype) if convert else source.to(current.dtype)
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = torch.nn.Parameter(source, requires_grad=False)
        else:
            owner._buffers[leaf] = source
    return missing
