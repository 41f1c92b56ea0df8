"""FP8 (e4m3fn) storage of the transformer blocks' linear weights, computed in the model's own dtype.

About half the host memory of bf16 and half the bytes the memory manager streams per step (the
blocks are 97% of FramePack's weights; the fixed part, embedders and output layers, stays bf16).

Which layers: every Linear inside the blocks, weights only (biases stay in the compute dtype).
diffusers' enable_layerwise_casting would also skip the blocks' modulation projections (its
"norm" pattern matches `norm1.linear`): 17% of the weights, which leaves FP8 at 65% of bf16.
FramePack's FP8 ports cast those too; bench/cpu/precision.py reports both selections.

How: a diffusers hook on each layer, registered under the name of diffusers' layerwise casting
so that `model.dtype` still answers the compute dtype. It differs from diffusers'
LayerwiseCastingHook on purpose: that one recasts the layer with `module.to()` before and after
every call, which replaces the parameters' storage; the memory manager packs each block's weights
into one buffer and points the parameters into it (or into a streaming slot), and replaced
parameters fall out of that buffer after the first step. Here the stored FP8 weight is never
touched: the layer computes with an upcast temporary copy, or (`--fp8 fast`, fp8_matmul.py)
multiplies it as it is with an FP8 copy of its input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry
from diffusers.hooks.layerwise_casting import (
    _LAYERWISE_CASTING_HOOK,
    LayerwiseCastingHook,
)

from .fp8_matmul import eligible, fp8_linear

FP8 = torch.float8_e4m3fn
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each counted once."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def is_fp8(model: torch.nn.Module) -> bool:
    return any(p.dtype == FP8 for p in model.parameters())


def fp8_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The linear layers whose weights are stored in FP8: all of those inside the blocks."""
    return [(f"{name}.{sub}", layer) for name in BLOCK_LISTS for sub, layer in getattr(model, name).named_modules()
            if isinstance(layer, torch.nn.Linear)]


class UpcastLinear(LayerwiseCastingHook):
    """Keeps the weight in its storage dtype; each call uses a temporary copy in the compute dtype,
    or, with `granularity` set (fp8_matmul.GRANULARITIES), multiplies in FP8 where the call allows."""

    granularity: str | None = None

    def initialize_hook(self, module: torch.nn.Linear):
        module.weight.data = module.weight.data.to(self.storage_dtype)  # the weight only: biases are tiny
        return module

    def pre_forward(self, module, *args, **kwargs):
        return args, kwargs

    def post_forward(self, module, output):
        return output

    def new_forward(self, module: torch.nn.Linear, input: torch.Tensor) -> torch.Tensor:
        if self.granularity is not None and eligible(input, module.weight):
            return fp8_linear(input.to(self.compute_dtype), module.weight, module.bias, self.granularity)
        bias = None if module.bias is None else module.bias.to(self.compute_dtype)
        return F.linear(input, module.weight.to(self.compute_dtype), bias)


def set_fp8_matmul(model: torch.nn.Module, granularity: str | None) -> int:
    """FP8 matrix multiplies (`granularity`: fp8_matmul.GRANULARITIES) or bf16 ones (None) for every
    FP8-stored layer of `model`, from its next call. Returns the number of layers."""
    registries = [getattr(layer, "_diffusers_hook", None) for _, layer in fp8_layers(model)]
    hooks = [registry.get_hook(_LAYERWISE_CASTING_HOOK) for registry in registries if registry is not None]
    hooks = [hook for hook in hooks if isinstance(hook, UpcastLinear)]
    for hook in hooks:
        hook.granularity = granularity
    return len(hooks)


def store_fp8_cached(model: torch.nn.Module, cache_dir=None, compute_dtype: torch.dtype | None = None):
    """FP8 storage for a model whose weights are mapped from files (models/mapped_loading.py).

    Converted once into a cached safetensors file of the FP8 weights (models/weight_cache.py) and
    mapped from it on every later start: no second conversion, and the FP8 weights stay in the page
    cache like the rest. Returns host bytes (before, after), or None for a model that is not mapped
    (then `store_fp8` converts in memory)."""
    from framepack_core.models.weight_cache import converted_file

    files = getattr(model, "mapped_files", None)
    if not files or is_fp8(model):
        return None
    before = tensor_bytes(model)
    compute_dtype = compute_dtype or model.dtype
    layers = fp8_layers(model)
    names = [f"{name}.weight" for name, _ in layers]
    sources = sorted({f.path for f in files})
    weights = {n: t.detach() for n, t in model.state_dict(keep_vars=True).items() if n in set(names)}
    mapped = converted_file(sources, "fp8-e4m3fn-v1", weights, lambda name, t: t.to(FP8), cache_dir, names)
    model.mapped_files = [*files, mapped]
    for (_, layer), name in zip(layers, names):
        layer.weight = torch.nn.Parameter(mapped.tensors[name], requires_grad=False)  # no conversion: read as FP8
        store_layer_fp8(layer, compute_dtype)
    return before, tensor_bytes(model)


def store_fp8(model: torch.nn.Module, compute_dtype: torch.dtype | None = None) -> tuple[int, int]:
    """Convert `model`'s eligible linear weights to FP8 storage, once (lossy, not undone).

    Call before the memory manager first places the model. Returns host bytes (before, after).
    """
    before = tensor_bytes(model)
    if is_fp8(model):
        return before, before
    compute_dtype = compute_dtype or model.dtype
    for _, layer in fp8_layers(model):
        store_layer_fp8(layer, compute_dtype)
    return before, tensor_bytes(model)


def store_layer_fp8(layer: torch.nn.Linear, compute_dtype: torch.dtype) -> UpcastLinear:
    """One Linear's weight in FP8, computed in `compute_dtype` (initialize_hook gives the weight its
    new, smaller storage)."""
    hook = UpcastLinear(FP8, compute_dtype, non_blocking=False)
    HookRegistry.check_if_exists_or_initialize(layer).register_hook(hook, _LAYERWISE_CASTING_HOOK)
    return hook
