"""Attention with the packed image tokens spread over the ranks: diffusers' own HunyuanVideo
processor (projections, norms, rotary embedding: its very code object, as speed/sage1.py runs it),
its one kernel call (`dispatch_attention_fn`) replaced by `ShardedAttention.attend`.

The processor hands the kernel [this rank's image tokens, all text and picture tokens] for every
head. Two exact ways to attend over the whole sequence from there:

- Ulysses (heads divisible by the ranks; FramePack has 24 heads: 2, 3, 4, 6, 8 ranks): an
  all-to-all gives each rank every image token for its share of the heads; the text tokens, whole
  on every rank, are cut to the same heads; the kernel runs; a second all-to-all hands each rank
  its tokens back for all heads, and the text tokens' heads are gathered.
- Otherwise the keys and values of the image tokens are gathered (every head, every token) and
  each rank attends its own queries: more bytes, any number of ranks.

Both give each query the same keys in the same order as one process. Why not yunchang or xfuser:
the sequence here is split unevenly (FramePack's packed lengths rarely divide by the ranks, and
all_to_all_single takes uneven splits as they are), the text is whole on every rank rather than
sharded, and xfuser ships its own pinned diffusers/torch stack. diffusers' own context-parallel
plans (`_cp_plan`) cover other transformers, not FramePack's packed history.
"""
from __future__ import annotations

import types

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

from .group import timed


def _calling(function: types.FunctionType, name: str, replacement) -> types.FunctionType:
    """`function` with the global `name` it calls bound to `replacement` (its module is left alone)."""
    if name not in function.__code__.co_names:
        raise ImportError(f"{function.__qualname__} no longer calls {name}; sequence parallelism cannot fit it")
    bound = types.FunctionType(function.__code__, {**function.__globals__, name: replacement}, function.__name__,
                               function.__defaults__, function.__closure__)
    bound.__kwdefaults__ = function.__kwdefaults__
    return bound


class ShardedAttention(HunyuanVideoAttnProcessor2_0):
    """One block's attention over tokens shared out by a shard.TokenPlan."""

    def __init__(self, plan, replaced, heads: int):
        super().__init__()
        self.plan, self.heads = plan, heads
        self._attention_backend = getattr(replaced, "_attention_backend", None)  # speed.attention sets it later
        self.ulysses = heads % plan.ranks.world == 0
        self._call = _calling(HunyuanVideoAttnProcessor2_0.__call__, "dispatch_attention_fn", self.attend)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        # The parameters named: diffusers' Attention passes a processor only the keywords it declares.
        return self._call(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def attend(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
               enable_gqa=False, attention_kwargs=None, *, backend=None, parallel_config=None):
        if attn_mask is not None or is_causal or dropout_p:
            raise RuntimeError("sequence parallel attention takes no mask, no causality, no dropout")

        def kernel(q, k, v):
            return dispatch_attention_fn(q, k, v, scale=scale, backend=backend)

        with timed(self.plan.ranks.traffic):
            if self.ulysses:
                return self._ulysses(kernel, query, key, value)
            return self._gathered_keys(kernel, query, key, value)

    def _ulysses(self, kernel, query, key, value):
        ranks, local = self.plan.ranks, self.plan.local
        width = self.heads // ranks.world
        mine = slice(ranks.rank * width, (ranks.rank + 1) * width)
        q, k, v = (torch.cat([self._heads_for_tokens(x[:, :local]), x[:, local:, mine]], dim=1)
                   for x in (query, key, value))
        out = kernel(q, k, v)
        total = self.plan.total
        image = self._tokens_for_heads(out[:, :total])
        text = ranks.all_gather_heads(out[:, total:])
        return torch.cat([image, text], dim=1)

    def _heads_for_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, my tokens, heads, dim) -> (batch, all tokens, my heads, dim)."""
        ranks, counts = self.plan.ranks, list(self.plan.counts)
        batch, tokens, heads, dim = x.shape
        world = ranks.world
        # rows: (rank that gets them, my token) -> each rank's block of heads, as contiguous rows
        rows = x.reshape(batch, tokens, world, heads // world, dim).permute(2, 1, 0, 3, 4)
        rows = rows.reshape(world * tokens, batch, heads // world, dim)
        out = ranks.all_to_all(rows, sum(counts), send=[tokens] * world, receive=counts)
        return out.permute(1, 0, 2, 3)

    def _tokens_for_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, all tokens, my heads, dim) -> (batch, my tokens, heads, dim)."""
        ranks, counts, local = self.plan.ranks, list(self.plan.counts), self.plan.local
        batch, _, width, dim = x.shape
        world = ranks.world
        out = ranks.all_to_all(x.permute(1, 0, 2, 3), world * local, send=counts, receive=[local] * world)
        out = out.reshape(world, local, batch, width, dim).permute(2, 1, 0, 3, 4)
        return out.reshape(batch, local, world * width, dim)

    def _gathered_keys(self, kernel, query, key, value):
        plan, local = self.plan, self.plan.local
        counts = list(plan.counts)
        k, v = (torch.cat([plan.ranks.all_gather_tokens(x[:, :local], counts, dim=1), x[:, local:]], dim=1)
                for x in (key, value))
        return kernel(query, k, v)
