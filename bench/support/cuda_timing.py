"""Timing a model on a CUDA device, shared by the streaming benchmarks (cpu/offload.py, cpu/precision.py,
gpu/gpu_report.py): steps timed after a warm-up, and the synchronous swap that FramePack apps do today."""
from __future__ import annotations

import time

import torch


class SyncPageableBaseline:
    """What FramePack apps do today: each block copied from pageable memory, on the compute stream, as it runs."""

    def __init__(self, blocks, device):
        self.device, self._host = device, {}
        self.handles = [h for b in blocks for h in (b.register_forward_pre_hook(self.before),
                                                     b.register_forward_hook(self.after))]

    def before(self, block, args):
        for p in block.parameters():
            self._host[p] = p.data
            p.data = p.data.to(self.device)  # synchronous: the GPU waits for every byte

    def after(self, block, args, output):
        for p in block.parameters():
            p.data = self._host.pop(p)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def time_steps(model, inputs, steps: int) -> float:
    model(**inputs)  # warm-up: kernels chosen, caches filled, prefetch primed
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        model(**inputs)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps
