"""TeaCache (Liu et al., 2024) as FramePack's reference app applies it.

Block 0's modulated input (its norm1 on the embedded tokens, with the timestep embedding) is
compared with the previous step's; the relative L1 change, rescaled by a polynomial fitted for
HunyuanVideo, is accumulated. While the sum stays under the threshold the blocks are skipped and
the residual they added last time is added again. The first and last step of each section always
compute.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache_strategy import Call, CacheMethod, FirstBlock, Moment, StepCacheStrategy

# TeaCache's rescaling of block 0's relative L1 change for HunyuanVideo, highest power first.
COEFFICIENTS = (733.226126, -401.131952, 67.5869174, -3.149878, 0.0961237896)


def rescale(rel_l1: float) -> float:
    value = 0.0
    for c in COEFFICIENTS:  # Horner
        value = value * rel_l1 + c
    return value


@dataclass
class _Branch:
    previous: torch.Tensor | None = None  # block 0's modulated input at the last step
    accumulated: float = 0.0


class TeaCache(StepCacheStrategy):
    method = CacheMethod.TEACACHE
    decides_at = Moment.BLOCK_INPUT

    def reset(self) -> None:
        self._branches = [_Branch() for _ in range(self.branches)]

    def decide(self, call: Call, first: FirstBlock | None) -> bool:
        state = self._branches[call.branch]
        modulated = first.block.norm1(first.hidden_states, emb=first.temb)[0]
        if self.always_computes(call.step) or state.previous is None or not call.can_skip:
            compute = True
        else:
            change = ((modulated - state.previous).abs().mean() / state.previous.abs().mean()).item()
            state.accumulated += rescale(change)
            compute = state.accumulated >= self.threshold
        if compute:
            state.accumulated = 0.0
        state.previous = modulated
        return compute

    def always_computes(self, step: int) -> bool:
        return step == 0 or step >= self.steps - 1
