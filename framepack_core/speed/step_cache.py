"""Step caches: skip the transformer's blocks on sampling steps where their work would barely change.

Attached from outside as diffusers hooks on the transformer and its blocks (the section loop
and the model stay untouched), detached at the end of the run, reset between sections.

- "teacache": TeaCache (Liu et al., 2024) as FramePack's reference app applies it. Block 0's
  modulated input (its norm1 on the embedded tokens, with the timestep embedding) is compared with
  the previous step's; the relative L1 change, rescaled by a polynomial fitted for HunyuanVideo,
  is accumulated. While the sum stays under the threshold the blocks are skipped and the residual
  they added last time is added again. The first and last step of each section always compute.
- "first-block": diffusers' own FirstBlockCache: block 0 always runs, the others are skipped while
  its residual stays close to the last computed one.

- "magcache": MagCache (magcache.py) with the magnitude ratios its authors published for both
  FramePack models. Its decision needs no tensor, so it is made on the transformer call, before
  block 0 is called: a skipped step runs no block at all. `calibrate=True` skips nothing and
  measures the ratios instead (`--cache-calibrate`).

Every skip decision is made here, in `StepCache` (`_compute`), and applied by the same block hooks.

Either way, block evaluations are counted by a hook inside each block's forward, so the numbers
reported are evaluations that really happened, not what the cache believes it did.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, ModelHook

from framepack_core.settings import CACHE_METHODS as METHODS
from memory import gate_blocks
from framepack_core.settings import DEFAULT_CACHE_THRESHOLD as DEFAULT_THRESHOLD

from .magcache import MagState, magnitude_ratio

# TeaCache's rescaling of block 0's relative L1 change for HunyuanVideo, highest power first.
COEFFICIENTS = (733.226126, -401.131952, 67.5869174, -3.149878, 0.0961237896)

_COUNT, _CALL, _SKIP = "framepack_block_count", "framepack_step_cache_call", "framepack_teacache"
_FBC_HEAD = "fbc_leader_block_hook"  # diffusers' name for FirstBlockCache's hook on block 0


def rescale(rel_l1: float) -> float:
    value = 0.0
    for c in COEFFICIENTS:  # Horner
        value = value * rel_l1 + c
    return value


@dataclass
class _Branch:
    """TeaCache state of one transformer call per step (the positive prompt; the negative with real CFG)."""
    previous: torch.Tensor | None = None  # block 0's modulated input at the last step
    accumulated: float = 0.0
    residual: torch.Tensor | None = None  # what the blocks added the last time they ran
    mag: MagState | None = None  # MagCache's accumulation
    mag_ratios: list | None = None  # calibrating: |residual| ratios of this section's steps


class StepCache:
    """The state the hooks share; the engine reads the counts and calls `reset()` between sections."""

    def __init__(self, transformer, method: str = "teacache", threshold: float = DEFAULT_THRESHOLD,
                 steps: int = 25, calls_per_step: int = 1, ratios: list[float] | None = None,
                 calibrate: bool = False):
        if method not in METHODS:
            raise ValueError(f"unknown step cache {method!r}; use one of {METHODS}")
        if method == "magcache" and ratios is None and not calibrate:
            raise ValueError("MagCache needs magnitude ratios for the model (speed/magcache.py ratios_for)")
        self.transformer, self.method, self.threshold = transformer, method, float(threshold)
        self.steps, self.calls_per_step = int(steps), int(calls_per_step)
        self.ratios, self.calibrate = ratios, calibrate
        self.calibration: list[list[float]] = []  # calibrating: each section's ratios, step 0 first
        self.blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        if len(self.blocks) < 2:
            raise ValueError("a step cache needs at least two transformer blocks")
        self.computed = 0  # block evaluations that ran, over the whole run
        self.calls = 0  # transformer calls over the whole run
        self.reset()

    @property
    def skipping(self) -> bool:
        """True while the current transformer call's blocks are being skipped. MagCache knows it before
        block 0 is called, TeaCache once block 0's hook has run: what a block streamer may ask."""
        return not self._compute

    @property
    def skipped(self) -> int:
        return self.calls * len(self.blocks) - self.computed

    def reset(self) -> None:
        """Forget the last section: the next one has another context, so nothing carries over."""
        self._flush_calibration()
        self._section_calls = 0
        self._branches = [_Branch(mag=MagState(), mag_ratios=[]) for _ in range(self.calls_per_step)]
        self._branch = self._branches[0]
        self._compute = True
        self._decided = False  # whether this call's decision is made (the streamer's gate asks)
        self._entry: torch.Tensor | None = None
        if self.method == "first-block":
            HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks()

    def attach(self) -> StepCache:
        for block in self.blocks:  # first, so it sits innermost: it sees only evaluations that run
            _register(block, _BlockCounter(self), _COUNT)
        if self.method in ("teacache", "magcache"):
            last = len(self.blocks) - 1
            for index, block in enumerate(self.blocks):
                _register(block, _TeaCacheBlock(self, head=index == 0, tail=index == last), _SKIP)

        else:
            self.transformer.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
            # diffusers decides in block 0's hook; read its decision right after (before the streamer's own hook)
            head = self.blocks[0]._diffusers_hook.get_hook(_FBC_HEAD)
            self._fbc_decided = self.blocks[0].register_forward_hook(
                lambda *args: self._record_fbc(head), prepend=True)
        _register(self.transformer, _CallTracker(self), _CALL)
        self._gate = gate_blocks(self.blocks, self.will_run)
        return self

    def _record_fbc(self, head) -> None:
        self._compute = head.state_manager.get_state().should_compute
        self._decided = True

    def detach(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self.transformer).remove_hook(_CALL, recurse=False)
        self._gate.remove()
        if self.method in ("teacache", "magcache"):
            for block in self.blocks:
                block._diffusers_hook.remove_hook(_SKIP, recurse=False)
        else:
            self._fbc_decided.remove()
            self.transformer.disable_cache()
        for block in self.blocks:
            block._diffusers_hook.remove_hook(_COUNT, recurse=False)
        HookRegistry.check_if_exists_or_initialize(self.transformer).invalidate_child_registries_cache()
        self._flush_calibration()  # a calibration keeps its last section
        self._branches = []  # let the cached tensors go

    def will_run(self, block, next_pass: bool) -> bool | None:
        """The memory streamer's question (memory/gates.py): will `block` need its weights?

        TeaCache and FirstBlockCache decide in block 0, so block 0 always runs and the others follow
        the decision once made; MagCache decides on the transformer call, before any block. For the
        next call it is known only where a step always computes."""
        if block is self.blocks[0] and self.method != "magcache":
            return True
        if not next_pass:
            return self._compute if self._decided else None
        step = self._section_calls // self.calls_per_step  # the step of the coming call
        always = step == 0 or (self.method == "teacache" and step >= self.steps - 1)
        return True if always else None

    def _flush_calibration(self) -> None:
        if self.calibrate and getattr(self, "_branches", None) and self._branches[0].mag_ratios:
            self.calibration.append([1.0] + self._branches[0].mag_ratios)
            self._branches[0].mag_ratios = []

    def calibrated_ratios(self) -> list[float]:
        """Calibrating: the ratios of every section, averaged step by step (5 decimals, as published)."""
        sections = [c for c in self.calibration if len(c) == self.steps]
        return [round(sum(values) / len(values), 5) for values in zip(*sections)] if sections else []

    # -- MagCache's decision, made on the transformer call before any block runs --
    def _decide_magcache(self) -> bool:
        step = (self._section_calls - 1) // self.calls_per_step
        branch = self._branch
        if self.calibrate or branch.residual is None:
            return True
        return not branch.mag.skip(step, self.ratios, self.threshold, self.steps)

    # -- TeaCache's decision, made in block 0 before it runs --
    def _decide(self, block, hidden_states: torch.Tensor, temb: torch.Tensor) -> bool:
        step = (self._section_calls - 1) // self.calls_per_step
        branch = self._branch
        modulated = block.norm1(hidden_states, emb=temb)[0]
        if step == 0 or step >= self.steps - 1 or branch.previous is None or branch.residual is None:
            compute = True
        else:
            change = ((modulated - branch.previous).abs().mean() / branch.previous.abs().mean()).item()
            branch.accumulated += rescale(change)
            compute = branch.accumulated >= self.threshold
        if compute:
            branch.accumulated = 0.0
        branch.previous = modulated
        return compute


def _register(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


class _CallTracker(ModelHook):
    """On the transformer: which step and which branch (positive/negative prompt) a call is."""

    def __init__(self, cache: StepCache):
        super().__init__()
        self.cache = cache

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        index = cache._section_calls % cache.calls_per_step
        cache._branch = cache._branches[index]
        cache._decided = False
        cache._section_calls += 1
        cache.calls += 1
        if cache.method == "magcache":
            cache._compute = cache._decide_magcache()
            cache._decided = True
        if cache.method == "first-block":  # diffusers keys its cache state by this name
            with module.cache_context("cond" if index == 0 else "uncond"):
                return self.fn_ref.original_forward(*args, **kwargs)
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


class _TeaCacheBlock(ModelHook):
    def __init__(self, cache: StepCache, head: bool, tail: bool):
        super().__init__()
        self.cache, self.head, self.tail = cache, head, tail

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        hidden_states, encoder_hidden_states, temb = _block_inputs(args, kwargs)
        if self.head:
            if cache.method == "teacache":
                cache._compute = cache._decide(module, hidden_states, temb)
                cache._decided = True
            cache._entry = hidden_states if cache._compute else None
        if cache._compute:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.tail:
                residual = output[0] - cache._entry
                branch = cache._branch
                if cache.calibrate and branch.residual is not None:
                    branch.mag_ratios.append(round(magnitude_ratio(residual, branch.residual), 5))
                branch.residual = residual
                cache._entry = None
            return output
        # Skipped: pass the tokens through; the last block adds what all of them added last time.
        if self.tail:
            hidden_states = hidden_states + cache._branch.residual
        return hidden_states, encoder_hidden_states


@contextmanager
def step_cache(transformer, enabled: bool, method: str = "teacache", threshold: float = DEFAULT_THRESHOLD,
               steps: int = 25, calls_per_step: int = 1, ratios: list[float] | None = None,
               calibrate: bool = False) -> Iterator[StepCache | None]:
    """The cache attached for the body (None when disabled: nothing is attached, the model runs as is)."""
    if not enabled:
        yield None
        return
    cache = StepCache(transformer, method, threshold, steps, calls_per_step, ratios, calibrate).attach()
    try:
        yield cache
    finally:
        cache.detach()
