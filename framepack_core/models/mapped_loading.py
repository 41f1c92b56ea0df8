"""Loading a model without materialising it: built on the meta device, parameters pointed into its
memory-mapped safetensors files (memory/mapped.py).

The libraries' `from_pretrained` reads every weight into the process's own memory, so the real
set needs about 43 GB of RAM before its first step. Here the weights stay in the files' pages
(the OS page cache): the process's anonymous memory does not grow with the model, and the memory
manager streams blocks from the file (or from pinned copies, as the RAM budget allows).

Used where it gives exactly what `from_pretrained` gives: the folder's files name every parameter
and persistent buffer of the model built from its config. Anything else (renamed keys, missing
tensors) returns None, and the caller falls back to `from_pretrained`. Tensors stored in another
dtype than wanted are converted once into a cached file (weight_cache.py) when large, in memory
when small.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from memory import bind_mapped, map_folder

from .weight_cache import converted_file

log = logging.getLogger(__name__)

CONVERT_IN_MEMORY_BYTES = 256 << 20  # below this, converting in memory is cheaper than a cache file


def _keep_fp32(model: torch.nn.Module) -> list[str]:
    return list(getattr(model, "_keep_in_fp32_modules", None) or [])


def _meta_model(cls, folder: Path, dtype: torch.dtype, library: str) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on meta; buffers computed for real (rotary tables and such)
        if library == "diffusers":
            model = cls.from_config(cls.load_config(folder))
        else:
            model = cls(cls.config_class.from_pretrained(folder))
    keep = _keep_fp32(model)
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and not any(part in name.split(".") for part in keep):
            parameter.data = parameter.data.to(dtype)
    return model


def load_mapped(cls, folder: Path, dtype: torch.dtype, library: str, cache_dir: Path | None = None):
    """The model in `folder` with its weights mapped from the folder's safetensors files, or None."""
    folder = Path(folder)
    if not any(folder.glob("*.safetensors")):
        return None
    model = _meta_model(cls, folder, dtype, library)
    files, tensors = map_folder(folder)
    state = model.state_dict(keep_vars=True)
    if set(state) - set(tensors) or any(tuple(tensors[n].shape) != tuple(t.shape) for n, t in state.items()):
        for mapped in files:
            mapped.close()
        log.info("%s: the files' names do not match the model's; loading the usual way", folder)
        return None
    wrong = {n: t.dtype for n, t in state.items() if tensors[n].dtype != t.dtype}
    if sum(tensors[n].numel() * t.itemsize for n, t in wrong.items()) > CONVERT_IN_MEMORY_BYTES:
        converted = converted_file(folder, f"dtype-{str(dtype).removeprefix('torch.')}", tensors,
                                   lambda name, t: t.to(wrong[name]) if name in wrong else t, cache_dir)
        files.append(converted)
        tensors = {**tensors, **converted.tensors}
    bind_mapped(model, tensors)
    if any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers()):
        return None
    model.mapped_files = files  # the mappings live as long as the model
    if hasattr(model, "config"):
        try:
            model.config._name_or_path = str(folder)
        except AttributeError:  # diffusers' frozen config
            pass
    return model.eval().requires_grad_(False)
