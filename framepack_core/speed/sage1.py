"""SageAttention 1.x (1.0.6 is the package index's newest) inside diffusers' HunyuanVideo attention.

diffusers calls SageAttention only from 2.1.1, a CUDA build from source; 1.0.6 installs from the
index, is Triton only, and quantises Q and K to int8 (P·V stays fp16). Its `sageattn(q, k, v,
tensor_layout, is_causal, sm_scale)` takes what diffusers' attention dispatcher takes for
FramePack's attention, so `Sage1Processor` is diffusers' own processor (projections, norms,
rotary embedding: its very code object, nothing copied) run with `sage1_dispatch` where it calls
`dispatch_attention_fn`: the same function with other globals, per processor, no global patch.
Plain Python all the way, so torch.compile traces it (a TorchFunctionMode around the processor did
not: dynamo cannot pass some Tensor methods through a mode); the kernel itself is a custom op,
opaque to the compiler, its Triton launches SageAttention's business.

A call SageAttention 1 cannot take (a mask, dropout, head sizes other than 64/96/128, float32,
tensors off the GPU) goes to diffusers' dispatcher unchanged.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import types

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

HEAD_DIMS = (64, 96, 128)  # the head sizes SageAttention 1's kernels are written for
DTYPES = (torch.float16, torch.bfloat16)
DEVICE_TYPES = ("cuda",)
DIFFUSERS_SAGE = (2, 1, 1)  # from this version diffusers' own "sage" backend is used instead


def installed_version() -> tuple[int, ...] | None:
    """SageAttention's version as numbers, or None when it is not installed."""
    try:
        text = importlib.metadata.version("sageattention")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def is_version_1(version: tuple[int, ...] | None) -> bool:
    return version is not None and version < DIFFUSERS_SAGE


@torch.library.custom_op("framepack::sage1_attention", mutates_args=())
def sage1_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None) -> torch.Tensor:
    """SageAttention 1 on (batch, tokens, heads, head_dim) tensors, as attention without a mask."""
    sageattn = importlib.import_module("sageattention").sageattn
    # sageattn would subtract the keys' mean in place (smooth_k), and the key is the caller's: done
    # here out of place. Softmax does not change: each query's logits all move by one constant.
    key = key - key.mean(dim=1, keepdim=True)
    return sageattn(query, key, value, tensor_layout="NHD", is_causal=False, sm_scale=scale, smooth_k=False)


@sage1_attention.register_fake
def _(query, key, value, scale):
    return torch.empty_like(query)


def takes(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, parallel_config) -> bool:
    """Whether SageAttention 1 can compute this dispatcher call."""
    return (attn_mask is None and not is_causal and not dropout_p and not enable_gqa and parallel_config is None
            and query.device.type in DEVICE_TYPES and query.dtype in DTYPES and query.dim() == 4
            and query.shape[-1] in HEAD_DIMS and key.shape == value.shape and query.shape[0] == key.shape[0]
            and query.shape[2:] == key.shape[2:] and query.dtype == key.dtype == value.dtype)


def sage1_dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                   attention_kwargs=None, *, backend=None, parallel_config=None):
    """diffusers' `dispatch_attention_fn`, with what SageAttention 1 can take sent to it."""
    if takes(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, parallel_config):
        return torch.ops.framepack.sage1_attention(query, key, value, scale)
    return dispatch_attention_fn(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                                 attention_kwargs, backend=backend, parallel_config=parallel_config)


def _calling(function: types.FunctionType, name: str, replacement) -> types.FunctionType:
    """`function` with the global `name` it calls bound to `replacement` (its module is left alone)."""
    if name not in function.__code__.co_names:
        raise ImportError(f"{function.__qualname__} no longer calls {name}; SageAttention 1 cannot be fitted to it")
    bound = types.FunctionType(function.__code__, {**function.__globals__, name: replacement}, function.__name__,
                               function.__defaults__, function.__closure__)
    bound.__kwdefaults__ = function.__kwdefaults__
    return bound


class Sage1Processor(HunyuanVideoAttnProcessor2_0):
    """diffusers' HunyuanVideo processor, its attention computed by SageAttention 1 where it can."""

    __call__ = _calling(HunyuanVideoAttnProcessor2_0.__call__, "dispatch_attention_fn", sage1_dispatch)
