"""Where a finishing run computes, and in how much memory: the CUDA GPU when there is one, held to the VRAM
budget as a generation is (memory/cap.py: the allocator capped for the whole process), its tiles sized to fit
the cap; else the CPU, where the tile size is the largest (the frame streaming keeps memory flat anyway)."""
from __future__ import annotations

GiB = 1 << 30


def device_and_budget(vram_budget_gb: float | None) -> tuple[str, int | None]:
    """("cuda", the allocator's cap in bytes) on a GPU, else ("cpu", None)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    from memory.cap import cap_allocator, configure_allocator

    configure_allocator()
    device = torch.device("cuda")
    budget = None if vram_budget_gb is None else int(vram_budget_gb * GiB)
    return "cuda", cap_allocator(device, budget)
