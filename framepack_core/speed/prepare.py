"""The transformer's speed options for one run: FP8 (storage, arithmetic), the attention kernel, torch.compile.

Applied at the start of every run, each idempotent, so a loaded model set can serve runs with
different options. The step cache is not here: it is attached only around the sampling loop
(step_cache.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from memory import size_text

from .attention import AttentionChoice, apply_attention
from .fp8_matmul import choose_granularity
from .precision import is_fp8, set_fp8_matmul, store_fp8, store_fp8_cached

log = logging.getLogger(__name__)

_EAGER = "_framepack_eager_forward"  # set on a block whose forward was replaced by a compiled one


@dataclass
class Prepared:
    attention: AttentionChoice
    fp8: str = "off"  # the FP8 mode that runs: off | storage | fast
    notices: list[str] = field(default_factory=list)  # for the user, one sentence each


def prepare_transformer(transformer, request, manager) -> Prepared:
    """Apply the request's fp8 / attention / compile options; call before `manager.use(transformer)`."""
    notices = []
    device = manager.device.torch_device if manager.manages_device else transformer.device
    fp8 = apply_fp8(transformer, request.fp8, device, manager, notices)
    choice = apply_attention(transformer, request.attention, device)
    if choice.notice():
        notices.append(choice.notice())
    notice = compile_blocks(transformer, request.compile, device)
    if notice:
        notices.append(notice)
    return Prepared(choice, fp8, notices)


def apply_fp8(transformer, requested: str, device: torch.device, manager, notices: list[str]) -> str:
    """FP8 storage (`storage`, `fast`) and FP8 arithmetic (`fast`, where the GPU has it) as asked.

    Returns the mode that runs. Storage is lossy and kept until the models are loaded again, so an
    `off` run after an FP8 one still runs on FP8 weights (and says so); `fast` where the device
    cannot multiply in FP8 is refused with a notice and runs as if FP8 had not been asked for.
    """
    granularity = None
    if requested == "fast":
        granularity, reason = choose_granularity(device)
        if reason:
            notices.append(f"FP8 arithmetic (--fp8 fast) is not used: {reason}. The transformer runs without "
                           "it (--fp8 storage keeps its weights in FP8 on any device).")
            requested = "off"
    if requested != "off" and not is_fp8(transformer):
        if manager.placement(transformer) is not None:
            manager.release()  # converted on the host; the manager packs the FP8 weights anew
        before, after = store_fp8_cached(transformer) or store_fp8(transformer)  # cached on disk when mapped
        notices.append(f"FP8 weight storage: the transformer's weights take {size_text(after)} "
                       f"instead of {size_text(before)}.")
    elif requested == "off" and is_fp8(transformer):
        notices.append("The transformer keeps the FP8 weights of an earlier run; load the models again for bf16.")
    if not is_fp8(transformer):
        return "off"
    set_fp8_matmul(transformer, granularity)
    return "fast" if granularity else "storage"


def transformer_blocks(transformer) -> list[torch.nn.Module]:
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def is_compiled(transformer) -> bool:
    return all(_EAGER in block.__dict__ for block in transformer_blocks(transformer))


def compile_blocks(transformer, enabled: bool, device: torch.device) -> str | None:
    """torch.compile each block's forward on CUDA (blocks, not the whole model: the memory manager's
    per-block hooks and the step cache's skips stay outside the compiled graphs). Returns a notice."""
    blocks = transformer_blocks(transformer)
    if not enabled:
        for block in blocks:
            if _EAGER in block.__dict__:
                block.forward = block.__dict__.pop(_EAGER)
        return None
    if torch.device(device).type != "cuda":
        return "torch.compile is used on a CUDA GPU only; the transformer runs uncompiled here."
    if is_compiled(transformer):
        return None
    for block in blocks:
        if _EAGER not in block.__dict__:
            eager = block.forward
            block.__dict__[_EAGER] = eager
            block.forward = torch.compile(eager)
    return "The transformer's blocks are compiled during the first steps; those take longer."
