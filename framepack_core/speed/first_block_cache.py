"""FirstBlockCache (ParaAttention's "first block cache", as diffusers' `FirstBlockCacheConfig` applies it).

Block 0 runs on every step. When the residual it adds differs from the one it added at the last
computed step by less than the threshold (mean absolute difference over the mean absolute value
of the old one), the other blocks are skipped and what they added last time is added again.

The arithmetic is diffusers' (hooks/first_block_cache.py), so the frames match what its hook makes;
it is written as a strategy here because diffusers decides inside its own hook, where the block
streamer cannot be told in time that the other blocks' weights will not be needed.
"""
from __future__ import annotations

from .cache_strategy import Call, CacheMethod, FirstBlock, Moment, StepCacheStrategy


class FirstBlockCache(StepCacheStrategy):
    method = CacheMethod.FIRST_BLOCK
    decides_at = Moment.BLOCK_OUTPUT

    def reset(self) -> None:
        self._head_residuals = [None] * self.branches  # block 0's residual at the last computed step

    def decide(self, call: Call, first: FirstBlock | None) -> bool:
        residual = first.output - first.hidden_states
        previous = self._head_residuals[call.branch]
        if previous is None or not call.can_skip:
            compute = True
        else:
            change = ((residual - previous).abs().mean() / previous.abs().mean()).item()
            compute = change > self.threshold
        if compute:
            self._head_residuals[call.branch] = residual
        return compute
