"""Prompt embeddings kept, so that a prompt seen before never touches the text encoders again.

The Llama encoder is 16 GB: on a 6 GB card every prompt streams all of it once. Its output for a
prompt is small (512 x 4096 features, a mask and CLIP's pooled vector, about 4 MB in bf16), so
it is kept in memory for the session and on disk beside the model cache for later sessions.

Keyed by the model set's name, the text encoders' weight files (path, size, modification time:
other weights, other features), the template and the prompt. `cached_prompt(models, prompt,
manager)` is the one call; each of a run's prompts goes through it.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path


from framepack_core.method.sections import PromptConditioning

from .encoders import EncodedPrompt, encode_prompt
from .weight_cache import cache_root

MEMORY_ENTRIES = 64
VERSION = 1  # raise when encode_prompt's output changes: older cached embeddings are then ignored
_memory: OrderedDict[str, EncodedPrompt] = OrderedDict()


def _weights_fingerprint(model) -> list[str]:
    files = getattr(model, "mapped_files", None)
    if files:
        paths = [f.path for f in files]
    else:
        folder = Path(str(getattr(getattr(model, "config", None), "_name_or_path", "") or "."))
        paths = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths if p.exists()] or [
        type(model).__name__]


def prompt_key(models, prompt: str) -> str:
    spec = models.spec
    parts = [VERSION, spec.name, spec.prompt_template, spec.crop_start, prompt,
             _weights_fingerprint(models.text_encoder), _weights_fingerprint(models.text_encoder_2)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def cache_folder(models, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / "prompts" / models.spec.name


def cached_prompt(models, prompt: str, manager=None, cache_dir: Path | None = None) -> EncodedPrompt:
    """`prompt` encoded, from memory, disk, or (once) the text encoders placed by `manager`."""
    key = prompt_key(models, prompt)
    if key in _memory:
        _memory.move_to_end(key)
        return _memory[key]
    path = cache_folder(models, cache_dir) / f"{key}.safetensors"
    encoded = _read(path)
    if encoded is None:
        use = manager.use(models.text_encoder, models.text_encoder_2) if manager is not None else nullcontext()
        with use:
            encoded = encode_prompt(models, prompt)
        _write(path, encoded)
    _memory[key] = encoded
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return encoded


def _read(path: Path) -> EncodedPrompt | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            meta = file.metadata() or {}
            t = {name: file.get_tensor(name) for name in ("embeds", "mask", "pooled")}
    except Exception:  # a broken cache file is only a miss: it is written again
        return None
    return EncodedPrompt(PromptConditioning(t["embeds"], t["mask"], t["pooled"]), meta.get("truncated") == "1")


def _write(path: Path, encoded: EncodedPrompt) -> None:
    from safetensors.torch import save_file

    embeds, mask, pooled = encoded.conditioning
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file({"embeds": embeds.contiguous(), "mask": mask.contiguous(), "pooled": pooled.contiguous()},
                  str(partial), {"truncated": "1" if encoded.truncated else "0"})
        partial.replace(path)
    except OSError:  # a read-only cache folder: the memory cache still works
        pass
