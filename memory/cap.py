"""The VRAM budget as a hard cap on the whole process, and the allocator configuration it runs under.

A budget is what the process may hold on the card, its CUDA context included (what nvidia-smi
shows for it). The context and anything else outside torch's caching allocator is measured when
a run starts (the card's total less what is free less what the allocator already holds), a margin
is kept for its growth (kernels loaded lazily as new operations first run), and the allocator is
capped to the rest with `torch.cuda.set_per_process_memory_fraction`: an allocation past it raises
torch.OutOfMemoryError at once instead of spilling past the budget. Without a budget the cap is
what is free when the run starts (plus what the allocator already holds).

The allocator runs with `expandable_segments:True` (set before CUDA initialises, unless the user
set PYTORCH_CUDA_ALLOC_CONF; `configure_allocator` is called where a process starts on CUDA: memory's
CudaDevice, the app's Session, a finishing run's placement; importing `memory` changes nothing): segments grow in place instead of a new segment per size class, so a
streamer's slots and a stage's activations freed and allocated again leave little reserved but
unused memory, which under a hard cap is memory the run cannot have. FRAMEPACK_EXPANDABLE_SEGMENTS=0
leaves torch's default (for measuring both; bench/gpu/gpu_session.sh).
"""
from __future__ import annotations

import os

import torch

MiB = 1 << 20
# Room kept under the budget for the CUDA context to grow after the cap is set (lazily loaded kernels,
# library handles): tens of MiB per new kind of operation on CUDA 12.
CONTEXT_GROWTH_BYTES = 256 * MiB
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
SWITCH = "FRAMEPACK_EXPANDABLE_SEGMENTS"
EXPANDABLE = "expandable_segments:True"


def configure_allocator(environ=os.environ) -> str | None:
    """Choose the caching allocator's configuration; a no-op once CUDA is initialised, or when the user chose.

    Returns the configuration set, or None when it left things as they were."""
    if ALLOC_CONF in environ or environ.get(SWITCH, "1") == "0":
        return None
    if torch.cuda.is_initialized():
        return None  # too late to take effect: the allocator read its configuration already
    environ[ALLOC_CONF] = EXPANDABLE  # for child processes, and for a torch that reads it lazily
    # This module is imported after torch, and a torch may have read the variable when it loaded: the
    # setting is also handed to the allocator itself, which takes it at any time before CUDA starts.
    # (bench/gpu/gpu_session.sh's machine step reads back whether the segments are expandable.)
    apply = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if apply is not None and torch.cuda.is_available():
        try:
            apply(EXPANDABLE)
        except RuntimeError:  # a build whose allocator has no such setting: the variable is all there is
            pass
    return environ[ALLOC_CONF]


def allocator_cap(total_bytes: int, free_bytes: int, reserved_bytes: int, budget_bytes: int | None,
                  growth_bytes: int = CONTEXT_GROWTH_BYTES) -> int:
    """Bytes torch's caching allocator may hold so that the whole process stays within `budget_bytes`.

    `free_bytes` and `total_bytes` are the card's (mem_get_info), `reserved_bytes` what the allocator
    holds now: the rest of the used memory is outside it (this process's context, other processes),
    and stays outside. None: what is free now, plus what the allocator already holds."""
    if budget_bytes is None:
        return max(free_bytes + reserved_bytes - growth_bytes, 0)
    outside = total_bytes - free_bytes - reserved_bytes
    return max(min(budget_bytes - outside - growth_bytes, free_bytes + reserved_bytes - growth_bytes), 0)


def cap_allocator(device: torch.device, budget_bytes: int | None) -> int:
    """Cap the caching allocator on `device` for a run under `budget_bytes` (None: what is free); returns the cap."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    cap = allocator_cap(total, free, torch.cuda.memory_reserved(index), budget_bytes)
    torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0), index)
    return cap
