"""LoRAs applied at forward time: each changed Linear gets a hook that adds `w * up(down(x))` to its output.

Why not merge into the weights: the base weights are never written, so a run after a LoRA is
bit-identical to one that never had it, however many switches (a merge and unmerge in bf16 or FP8
would drift, and keeping an exact copy of a 26 GB transformer to restore from is not affordable
on a 16 GB PC). Why hooks and not PEFT adapters: PEFT replaces the Linear modules, which would
break the memory manager's packed block weights and the FP8 storage hook; a plain forward hook
beside the layer sees whatever the layer computed with (streamed slot, disk tier, FP8 upcast,
compiled block) and leaves placement alone. The step cache skips whole blocks, LoRA included.

The LoRA matrices stay on the host in float32 and are copied, once per run, to the device and
dtype of the first input they meet; they are small (rank x (in + out) per layer). On the CPU the
copies start at the same alignment as the packed base weights (memory's ALIGN), so a LoRA's two
matmuls see their weights at equally aligned addresses in every run, resident or streamed: MKL's
reproducible mode (framepack_core/reproducible.py) does not need it, but BLAS libraries with no such
switch (OpenBLAS, Accelerate) may pick a kernel path by alignment.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from memory.device import cpu_bytes

from .lora_files import load_lora


def placed(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` copied to `device` and `dtype`, starting aligned as the manager's packed weights do
    (device allocators align at least that much on their own; the CPU's only to 64 bytes)."""
    if device.type != "cpu":
        return tensor.to(device=device, dtype=dtype)
    copy = cpu_bytes(tensor.numel() * dtype.itemsize).view(dtype).view(tensor.shape)
    return copy.copy_(tensor)


class LoraHook:
    """The summed low-rank update of one Linear: ranks of several LoRAs stacked into one pair."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor):
        self.down, self.up = down, up  # (R, in), (out, R), weights folded into `up`
        self._placed: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, module, args, output):
        x = args[0]
        key = (x.device, x.dtype)
        if key not in self._placed:
            self._placed[key] = (placed(self.down, x.device, x.dtype), placed(self.up, x.device, x.dtype))
        down, up = self._placed[key]
        return output + F.linear(F.linear(x, down), up)


def lora_terms(loras: Sequence[tuple[str | Path, float]], shapes: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (down, up)} of several LoRAs with their weights; weight-0 LoRAs leave no trace."""
    terms: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for path, weight in loras:
        if weight == 0:
            continue
        for layer, (down, up) in load_lora(path, shapes).items():
            terms.setdefault(layer, []).append((down, up * float(weight)))
    return {layer: (torch.cat([d for d, _ in pairs]), torch.cat([u for _, u in pairs], dim=1))
            for layer, pairs in terms.items()}


@contextmanager
def applied_loras(transformer: torch.nn.Module, loras: Sequence[tuple[str | Path, float]]) -> Iterator[int]:
    """The transformer with these LoRAs while the block runs; exactly the base model afterwards.

    Yields the number of layers changed. Files are checked before any hook is attached, so a bad
    one changes nothing.
    """
    linears = {name: m for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    shapes = {name: (m.out_features, m.in_features) for name, m in linears.items()}
    terms = lora_terms(loras, shapes) if loras else {}
    handles = [linears[layer].register_forward_hook(LoraHook(down, up)) for layer, (down, up) in terms.items()]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
