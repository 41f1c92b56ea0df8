"""SageAttention 1.x (1.0.6 is the package index's newest) inside diffusers' HunyuanVideo attention.

diffusers calls SageAttention only from 2.1.1, a CUDA build from source; 1.0.6 installs from the
index, is Triton only, and quantises Q and K to int8 (P·V stays fp16). Its `sageattn(q, k, v,
tensor_layout, is_causal, sm_scale)` takes what PyTorch's SDPA takes for FramePack's attention, so
`Sage1Processor` is diffusers' own processor (projections, norms, rotary embedding: nothing
copied) whose SDPA call is answered by SageAttention: a TorchFunctionMode entered around the
processor's call, per model, no global patch. torch.compile traces through the mode; the kernel
itself is a custom op, opaque to the compiler (its Triton launches are SageAttention's business).

A call SageAttention 1 cannot take (a mask, dropout, head sizes other than 64/96/128, float32,
tensors off the GPU) goes to SDPA unchanged.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
from torch.overrides import TorchFunctionMode

HEAD_DIMS = (64, 96, 128)  # the head sizes SageAttention 1's kernels are written for
DTYPES = (torch.float16, torch.bfloat16)
DIFFUSERS_SAGE = (2, 1, 1)  # from this version diffusers' own "sage" backend is used instead
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


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
    """SageAttention 1 on (batch, heads, tokens, head_dim) tensors, as SDPA without a mask."""
    sageattn = importlib.import_module("sageattention").sageattn
    # sageattn would subtract the keys' mean in place (smooth_k), and the key is the caller's: done
    # here out of place. Softmax does not change: each query's logits all move by one constant.
    key = key - key.mean(dim=2, keepdim=True)
    return sageattn(query, key, value, tensor_layout="HND", is_causal=False, sm_scale=scale, smooth_k=False)


@sage1_attention.register_fake
def _(query, key, value, scale):
    return torch.empty_like(query)


class SdpaAsSage1(TorchFunctionMode):
    """Inside it, SDPA calls that SageAttention 1 can take go to SageAttention 1."""

    def __init__(self, device_types: tuple[str, ...] = ("cuda",)):
        super().__init__()
        self.device_types = device_types

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            call = dict(zip(_SDPA_ARGS, args)) | kwargs
            if self.takes(call):
                return torch.ops.framepack.sage1_attention(call["query"], call["key"], call["value"], call.get("scale"))
        return func(*args, **kwargs)

    def takes(self, call: dict) -> bool:
        q, k, v = call["query"], call["key"], call["value"]
        return (call.get("attn_mask") is None and not call.get("is_causal") and not call.get("dropout_p")
                and not call.get("enable_gqa") and q.device.type in self.device_types and q.dtype in DTYPES
                and q.dim() == 4 and q.shape[-1] in HEAD_DIMS and k.shape == v.shape
                and q.shape[:2] == k.shape[:2] and q.shape[-1] == k.shape[-1] and q.dtype == k.dtype == v.dtype)


class Sage1Processor(HunyuanVideoAttnProcessor2_0):
    """diffusers' HunyuanVideo processor, its attention computed by SageAttention 1 where it can.

    The signature is the parent's, spelt out: diffusers passes a processor only the keyword
    arguments its `__call__` names."""

    device_types = ("cuda",)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        with SdpaAsSage1(self.device_types):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
