"""Where the packed image tokens are split across the ranks and gathered again.

A diffusers hook on each transformer block (dual- and single-stream), attached before anything
else hooks the blocks, so it sits innermost: the step caches and the memory streamer, hooked later
around it, see whole hidden states as in one process. A block given the whole packed sequence
takes its own rank's contiguous share of it and of the rotary frequencies; the text and picture
tokens (encoder_hidden_states) stay whole on every rank. The first block and the last give their
output back whole: the last because the transformer's output layer reads the noisy tokens at the
end of the sequence, the first because a step cache may decide from block 0's output (FirstBlockCache)
and then skip the rest, handing the tail's residual to whole hidden states.

So every rank computes the same decisions from the same whole tensors, and one extra gather per
call (block 0's output) is the price of that; the blocks between exchange only in attention.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .attention import ShardedAttention
from .group import Ranks

_HOOK = "framepack_sequence_parallel"


@dataclass
class TokenPlan:
    """How the packed image tokens of the current transformer call are shared out."""
    ranks: Ranks
    total: int = 0
    counts: tuple[int, ...] = ()
    start: int = 0

    def plan(self, total: int) -> None:
        world, rank = self.ranks.world, self.ranks.rank
        base, extra = divmod(total, world)
        self.total = total
        self.counts = tuple(base + (1 if r < extra else 0) for r in range(world))
        self.start = sum(self.counts[:rank])

    @property
    def local(self) -> int:
        return self.counts[self.ranks.rank]

    def share(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.narrow(dim, self.start, self.local)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return self.ranks.all_gather_tokens(x, list(self.counts), dim=1)


class _ShardedBlock(ModelHook):
    def __init__(self, plan: TokenPlan, first: bool, last: bool):
        super().__init__()
        self.plan, self.first, self.last = plan, first, last

    def new_forward(self, module, *args, **kwargs):
        # Both block kinds take (hidden_states, encoder_hidden_states, temb, attention_mask, rotary), the
        # rotary one named image_rotary_emb or freqs_cis; FramePack's transformer passes them by position.
        values = _Arguments(args, kwargs)
        plan = self.plan
        if values.get(3, "attention_mask") is not None:
            raise RuntimeError("sequence parallel attention takes batch 1, without an attention mask")
        hidden_states = values.get(0, "hidden_states")
        if self.first:
            plan.plan(hidden_states.shape[1])
        if hidden_states.shape[1] == plan.total:  # whole: block 0, or the one after it
            values.put(0, "hidden_states", plan.share(hidden_states, 1))
        for name in ("image_rotary_emb", "freqs_cis"):
            rotary = values.get(4, name)
            if rotary is not None and rotary[0].shape[0] == plan.total:
                values.put(4, name, tuple(plan.share(r, 0) for r in rotary))
        hidden_states, encoder_hidden_states = self.fn_ref.original_forward(*values.args, **values.kwargs)
        if self.first or self.last:
            hidden_states = plan.gather(hidden_states)
        return hidden_states, encoder_hidden_states


class _Arguments:
    def __init__(self, args, kwargs):
        self.args, self.kwargs = list(args), dict(kwargs)

    def get(self, index: int, name: str):
        return self.args[index] if index < len(self.args) else self.kwargs.get(name)

    def put(self, index: int, name: str, value) -> None:
        if index < len(self.args):
            self.args[index] = value
        elif name in self.kwargs:
            self.kwargs[name] = value


@contextmanager
def sequence_parallel(transformer, ranks: Ranks):
    """`transformer` split over `ranks` for the body: its blocks hooked, its attention processors
    made sequence parallel; all of it undone afterwards (the session keeps the model for later runs)."""
    if ranks.world == 1:
        yield
        return
    plan = TokenPlan(ranks)
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    kept = []
    for index, block in enumerate(blocks):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            _ShardedBlock(plan, first=index == 0, last=index == len(blocks) - 1), _HOOK)
        kept.append((block.attn, block.attn.processor))
        block.attn.processor = ShardedAttention(plan, block.attn.processor, transformer.config.num_attention_heads)
    try:
        yield plan
    finally:
        for attn, processor in kept:
            attn.processor = processor
        for block in blocks:
            block._diffusers_hook.remove_hook(_HOOK, recurse=False)
