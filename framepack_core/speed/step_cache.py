"""Step caches: skip the transformer's blocks on sampling steps where their work would barely change.

Attached from outside as diffusers hooks on the transformer and its blocks (the section loop
and the model stay untouched), detached at the end of the run, reset between sections. What to
skip is a strategy's (cache_strategy.py: MagCache, TeaCache, FirstBlockCache); how to skip is
the same for all of them and lives here: a skipped call passes the tokens through the skipped
blocks and the last one adds the residual they added at the last computed call. A skipped call
skips every block (MagCache, TeaCache) or every block after block 0 (FirstBlockCache).

The run's block streamer learns what will run through the run's `BlockGates` (memory/gates.py),
so skipped blocks cost no copies. Block evaluations are counted by a hook inside each block's
forward, so the numbers reported are evaluations that really happened, not what the cache
believes it did.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from framepack_core.settings import DEFAULT_CACHE_THRESHOLD as DEFAULT_THRESHOLD
from framepack_core.settings import DEFAULTS
from memory import BlockGates

from .cache_strategy import DEFAULT_METHOD, Call, CacheMethod, FirstBlock, Moment, StepCacheStrategy, cache_method
from .first_block_cache import FirstBlockCache
from .magcache import MagCache
from .teacache import TeaCache

_COUNT, _CALL, _SKIP = "framepack_block_count", "framepack_step_cache_call", "framepack_step_cache_skip"


def make_strategy(method: str | CacheMethod = DEFAULT_METHOD, threshold: float = DEFAULT_THRESHOLD,
                  steps: int = DEFAULTS["steps"], branches: int = 1, ratios: list[float] | None = None,
                  calibrate: bool = False) -> StepCacheStrategy:
    """The named cache's rule. MagCache needs the model's magnitude ratios (magcache.ratios_for)
    unless it calibrates them."""
    method = cache_method(method)
    if method is CacheMethod.MAGCACHE:
        return MagCache(threshold, steps, branches, ratios, calibrate)
    return {CacheMethod.TEACACHE: TeaCache, CacheMethod.FIRST_BLOCK: FirstBlockCache}[method](threshold, steps, branches)


class StepCache:
    """A strategy attached to a transformer; the engine reads the counts and calls `reset()` between sections."""

    def __init__(self, transformer, strategy: StepCacheStrategy, calls_per_step: int = 1,
                 gates: BlockGates | None = None):
        self.transformer, self.strategy, self.gates = transformer, strategy, gates
        self.calls_per_step = int(calls_per_step)
        self.blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        if len(self.blocks) < 2:
            raise ValueError("a step cache needs at least two transformer blocks")
        self.computed = 0  # block evaluations that ran, over the whole run
        self.calls = 0  # transformer calls over the whole run
        self._gate = None
        self.reset()

    @property
    def method(self) -> CacheMethod:
        return self.strategy.method

    @property
    def skipped(self) -> int:
        return self.calls * len(self.blocks) - self.computed

    def reset(self) -> None:
        """Forget the last section: the next one has another context, so nothing carries over."""
        self.strategy.reset()
        self._section_calls = 0
        self._residuals: list[torch.Tensor | None] = [None] * self.calls_per_step  # per branch, the last added
        self._call: Call | None = None
        self._compute = True
        self._decided = False  # whether this call's decision is made (the streamer's gate asks)
        self._entry: torch.Tensor | None = None  # the hidden states where the skippable blocks begin

    def attach(self) -> StepCache:
        for block in self.blocks:  # first, so it sits innermost: it sees only evaluations that run
            _register(block, _BlockCounter(self), _COUNT)
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            _register(block, _CachedBlock(self, head=index == 0, tail=index == last), _SKIP)
        _register(self.transformer, _CallTracker(self), _CALL)
        if self.gates is not None:
            self._gate = self.gates.add(self.blocks, self.will_run)
        return self

    def detach(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(_CALL, recurse=False)
        if self._gate is not None:
            self._gate.remove()
        for block in self.blocks:
            block._diffusers_hook.remove_hook(_SKIP, recurse=False)
            block._diffusers_hook.remove_hook(_COUNT, recurse=False)
        HookRegistry.check_if_exists_or_initialize(self.transformer).invalidate_child_registries_cache()
        self.strategy.reset()  # a calibration keeps its last section
        self._residuals = []  # let the cached tensors go

    def will_run(self, block, next_pass: bool) -> bool | None:
        """The memory streamer's question (memory/gates.py): will `block` need its weights?

        A strategy that decides in block 0 always needs it; the others follow the decision once made.
        For the next call it is known only where a step always computes."""
        if block is self.blocks[0] and self.strategy.decides_at is not Moment.CALL:
            return True
        if not next_pass:
            return self._compute if self._decided else None
        step = self._section_calls // self.calls_per_step  # the step of the coming call
        return True if self.strategy.always_computes(step) else None

    # -- what the hooks call --
    def _start_call(self) -> None:
        branch = self._section_calls % self.calls_per_step
        self._call = Call(self._section_calls // self.calls_per_step, branch, self._residuals[branch] is not None)
        self._decided = False
        self._section_calls += 1
        self.calls += 1
        if self.strategy.decides_at is Moment.CALL:
            self._decide(None)

    def _decide(self, first: FirstBlock | None) -> None:
        self._compute = self.strategy.decide(self._call, first)
        self._decided = True

    def _observe(self, output: torch.Tensor) -> None:
        residual = output - self._entry
        branch = self._call.branch
        self.strategy.observe(self._call, residual, self._residuals[branch])
        self._residuals[branch] = residual
        self._entry = None


def _register(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


class _CallTracker(ModelHook):
    """On the transformer: which step and which branch (positive/negative prompt) a call is."""

    def __init__(self, cache: StepCache):
        super().__init__()
        self.cache = cache

    def new_forward(self, module, *args, **kwargs):
        self.cache._start_call()
        return self.fn_ref.original_forward(*args, **kwargs)


class _BlockCounter(ModelHook):
    def __init__(self, cache: StepCache):
        super().__init__()
        self.cache = cache

    def new_forward(self, module, *args, **kwargs):
        self.cache.computed += 1
        return self.fn_ref.original_forward(*args, **kwargs)


def _block_inputs(args, kwargs):
    # Both HunyuanVideo block kinds take (hidden_states, encoder_hidden_states, temb, ...).
    names = ("hidden_states", "encoder_hidden_states", "temb")
    return [kwargs[n] if n in kwargs else args[i] for i, n in enumerate(names)]


class _CachedBlock(ModelHook):
    def __init__(self, cache: StepCache, head: bool, tail: bool):
        super().__init__()
        self.cache, self.head, self.tail = cache, head, tail

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        hidden_states, encoder_hidden_states, temb = _block_inputs(args, kwargs)
        if self.head and cache.strategy.decides_at is Moment.BLOCK_OUTPUT:
            # Block 0 always runs; the skippable blocks begin after it.
            output = self.fn_ref.original_forward(*args, **kwargs)
            cache._decide(FirstBlock(module, hidden_states, temb, output[0]))
            cache._entry = output[0] if cache._compute else None
            return output
        if self.head:
            if cache.strategy.decides_at is Moment.BLOCK_INPUT:
                cache._decide(FirstBlock(module, hidden_states, temb))
            cache._entry = hidden_states if cache._compute else None
        if cache._compute:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.tail:
                cache._observe(output[0])
            return output
        # Skipped: pass the tokens through; the last block adds what the skipped ones added last time.
        if self.tail:
            hidden_states = hidden_states + cache._residuals[cache._call.branch]
        return hidden_states, encoder_hidden_states


@contextmanager
def step_cache(transformer, enabled: bool, method: str | CacheMethod = DEFAULT_METHOD,
               threshold: float = DEFAULT_THRESHOLD, steps: int = DEFAULTS["steps"], calls_per_step: int = 1,
               ratios: list[float] | None = None, calibrate: bool = False,
               gates: BlockGates | None = None) -> Iterator[StepCache | None]:
    """The cache attached for the body (None when disabled: nothing is attached, the model runs as is).

    `gates`: the run's BlockGates, the same its memory manager's streamers ask (None: no streamer to tell)."""
    if not enabled:
        yield None
        return
    strategy = make_strategy(method, threshold, steps, calls_per_step, ratios, calibrate)
    cache = StepCache(transformer, strategy, calls_per_step, gates).attach()
    try:
        yield cache
    finally:
        cache.detach()
