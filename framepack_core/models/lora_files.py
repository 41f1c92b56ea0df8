"""LoRA files: read safely, recognise the format, convert to this transformer's layer names, check.

Three formats are in use for HunyuanVideo / FramePack:
- musubi-tuner / kohya: `lora_unet_<module with _>.lora_down.weight / .lora_up.weight / .alpha`;
  the module is either an original HunyuanVideo name (`double_blocks_0_img_attn_qkv`) or a
  diffusers one (`transformer_blocks_0_attn_to_q`, what musubi's FramePack trainer writes);
- diffusers / PEFT: `transformer.<module>.lora_A.weight / .lora_B.weight` (optional `.alpha`);
- original HunyuanVideo: `diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight`, fused qkv.
  These go through diffusers' own `_convert_hunyuan_video_lora_to_diffusers`, except the single
  blocks' fused `linear1`, which diffusers splits at a hard-coded width of 3072 (the 13B model's):
  that one is split here at this transformer's width, the same split for the real model.

Every format ends as {layer name: (down (r, in), up (out, r) with alpha/r folded in)} in float32.
The same code runs on meta tensors built from the file's header (the request's validator: no
tensor is read) and on the real tensors (the run). Pickle files are never opened: they can run code.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]

_ORIGINAL_LEAVES = ("img_attn_qkv", "img_attn_proj", "img_mlp.fc1", "img_mlp.fc2", "img_mod.linear",
                    "txt_attn_qkv", "txt_attn_proj", "txt_mlp.fc1", "txt_mlp.fc2", "txt_mod.linear",
                    "linear1", "linear2", "modulation.linear")
_ENDINGS = {".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_A.weight": "down",
            ".lora_B.weight": "up", ".lora.down.weight": "down", ".lora.up.weight": "up", ".alpha": "alpha"}
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
@dataclass(frozen=True)
class LoraFile:
    path: Path
    sha256: str
    format: str  # 'musubi', 'diffusers' or 'hunyuan'
    layers: int  # how many of the transformer's linear layers it changes


@lru_cache(maxsize=None)
def linear_shapes(model_set: str) -> dict[str, tuple[int, int]]:
    """{layer name: (out, in)} of every Linear in the model set's transformer, built on the meta device."""
    from .published import meta_model

    model = meta_model("transformer", model_set)
    return {name: (m.out_features, m.in_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def check_lora(path, model_set: str) -> LoraFile:
    """What the request's validator calls: the file's header converted and checked, no tensor read."""
    path = Path(path)
    tensors = {key: torch.empty(shape, dtype=dtype, device="meta") for key, (dtype, shape) in _header(path).items()}
    fmt, pairs = convert(path.name, tensors, linear_shapes(model_set))
    return LoraFile(path, file_sha256(path), fmt, len(pairs))


def load_lora(path, shapes: dict[str, tuple[int, int]]) -> Pairs:
    """The file's LoRA as float32 pairs for `shapes`' layers; raises ValueError as `check_lora`."""
    from safetensors.torch import load_file

    path = Path(path)
    _header(path)  # the same refusals before anything is read
    return convert(path.name, load_file(str(path)), shapes)[1]


def convert(name: str, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]]) -> tuple[str, Pairs]:
    keys = list(tensors)
    if any(k.startswith("lora_unet_") for k in keys):
        fmt, pairs = "musubi", _from_musubi(name, tensors, shapes)
    elif any(k.startswith("diffusion_model.") or "double_blocks." in k or "single_blocks." in k for k in keys):
        fmt, pairs = "hunyuan", _from_original(name, _grouped(name, tensors, "diffusion_model."), shapes)
    elif any(k.startswith("transformer.") and ("lora_A" in k or "lora_B" in k or ".lora." in k) for k in keys):
        fmt, pairs = "diffusers", _scaled(name, _grouped(name, tensors, "transformer."))
    else:
        shown = ", ".join(repr(k) for k in keys[:3]) or "none"
        raise ValueError(f"{name} holds no LoRA for the FramePack transformer: its keys look like {shown} "
                         f"({len(keys)} in all).")
    _check_shapes(name, pairs, shapes)
    return fmt, pairs


def _grouped(name: str, tensors, prefix: str) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {'down', 'up', 'alpha'}} with `prefix` taken off; any other key is refused."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        ending = next((e for e in _ENDINGS if key.endswith(e)), None)
        if ending is None:
            raise ValueError(f"{name} has a key that is not part of a LoRA: {key!r}.")
        module = key[: -len(ending)].removeprefix(prefix)
        modules.setdefault(module, {})[_ENDINGS[ending]] = tensor
    for module, parts in modules.items():
        if "down" not in parts or "up" not in parts:
            raise ValueError(f"{name} is incomplete: layer {module!r} has no "
                             f"{'down (A)' if 'down' not in parts else 'up (B)'} matrix.")
    return modules


def _scaled(name: str, modules: dict[str, dict[str, torch.Tensor]]) -> Pairs:
    """Pairs with alpha / rank folded into the up matrix (no alpha: scale 1, as PEFT files mean it)."""
    pairs = {}
    for module, parts in modules.items():
        down, up = parts["down"].float(), parts["up"].float()
        if down.ndim != 2 or up.ndim != 2:
            raise ValueError(f"{name}: layer {module!r} is not a linear LoRA (matrices of {down.ndim} and "
                             f"{up.ndim} dimensions).")
        alpha = parts.get("alpha")
        if alpha is not None and alpha.device.type != "meta" and down.shape[0]:  # meta: shapes only
            up = up * (float(alpha.float().reshape(-1)[0]) / down.shape[0])
        pairs[module] = (down, up)
    return pairs


def _from_musubi(name: str, tensors, shapes) -> Pairs:
    modules = _grouped(name, tensors, "lora_unet_")
    originals = {leaf.replace(".", "_"): leaf for leaf in _ORIGINAL_LEAVES}
    ours = {layer.replace(".", "_"): layer for layer in shapes}
    original, diffusers = {}, {}
    for module, parts in modules.items():
        found = re.fullmatch(r"(double_blocks|single_blocks)_(\d+)_(.+)", module)
        if found and found.group(3) in originals:
            original[f"{found.group(1)}.{found.group(2)}.{originals[found.group(3)]}"] = parts
        elif module in ours:
            diffusers[ours[module]] = parts
        else:
            raise ValueError(f"{name} changes a layer the FramePack transformer does not have: {module!r}.")
    return _from_original(name, original, shapes) | _scaled(name, diffusers)


def _from_original(name: str, modules: dict[str, dict[str, torch.Tensor]], shapes) -> Pairs:
    from diffusers.loaders.lora_conversion_utils import _convert_hunyuan_video_lora_to_diffusers

    pairs = _scaled(name, modules)  # alpha folded in before the fused matrices are split
    out: Pairs = {}
    rest = {}
    for module, (down, up) in pairs.items():
        found = re.fullmatch(r"single_blocks\.(\d+)\.linear1", module)
        if found:  # q, k, v and the MLP's input, fused; split at this model's width (see the module's note)
            width = shapes.get(f"single_transformer_blocks.{found.group(1)}.attn.to_q", (0, 0))[0]
            if not width or up.shape[0] <= 3 * width:
                raise ValueError(f"{name}: layer {module!r} has {up.shape[0]} outputs, which do not fit this "
                                 f"transformer's single blocks.")
            parts = torch.split(up, [width, width, width, up.shape[0] - 3 * width])
            for target, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts):
                out[f"single_transformer_blocks.{found.group(1)}.{target}"] = (down, part)
        else:
            rest[f"{module}.lora_A.weight"], rest[f"{module}.lora_B.weight"] = down, up
    converted = _convert_hunyuan_video_lora_to_diffusers(rest)
    for module, parts in _grouped(name, converted, "transformer.").items():
        out[module] = (parts["down"], parts["up"])
    return out


def _check_shapes(name: str, pairs: Pairs, shapes) -> None:
    unknown = [module for module in pairs if module not in shapes]
    if unknown:
        raise ValueError(f"{name} changes {len(unknown)} layer{'s' if len(unknown) > 1 else ''} the FramePack "
                         f"transformer does not have, e.g. {unknown[0]!r}.")
    for module, (down, up) in pairs.items():
        out_features, in_features = shapes[module]
        if down.ndim != 2 or up.ndim != 2 or down.shape[1] != in_features or up.shape[0] != out_features \
                or up.shape[1] != down.shape[0]:
            raise ValueError(f"{name} does not fit this transformer: layer {module!r} takes {in_features} and "
                             f"gives {out_features} values, the LoRA's matrices are {tuple(down.shape)} and "
                             f"{tuple(up.shape)} (a LoRA for another model?).")
    if not pairs:
        raise ValueError(f"{name} holds no LoRA layers.")


def _header(path: Path) -> dict[str, tuple[torch.dtype, list[int]]]:
    """The safetensors header: {key: (dtype, shape)}. Refuses pickles and anything not safetensors."""
    if not path.is_file():
        raise ValueError(f"The LoRA file {str(path)!r} does not exist.")
    with open(path, "rb") as file:
        head = file.read(9)
        size = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else 0
        if head[8:] != b"{" or not 2 <= size <= min(path.stat().st_size - 8, 100 * 2**20):
            # A zip (torch.save) or a bare pickle (protocol 2+): never unpickled, it could run code.
            if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
                raise ValueError(f"{path.name} is a PyTorch pickle file, which can run code when opened; only "
                                 ".safetensors LoRA files are read.")
            raise ValueError(f"{path.name} is not a safetensors file.")
        file.seek(8)
        try:
            header = json.loads(file.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path.name} is not a safetensors file (its header is not JSON).") from None
    header.pop("__metadata__", None)
    out = {}
    for key, info in header.items():
        dtype = _DTYPES.get(info.get("dtype") if isinstance(info, dict) else None)
        if dtype is None:
            raise ValueError(f"{path.name}: {key!r} is not a floating point tensor, so not a LoRA matrix.")
        out[key] = (dtype, list(info["shape"]))
    return out


_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """The file's SHA-256, remembered while the file's size and time stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(2**20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]
