"""What every run of a process shares, from the command line's flags once: where the models are,
the VRAM and RAM budgets, the device. The page, `generate`, `queue run` and each Ray worker get
the same object (it is small, frozen and picklable); `session.Session` is built from it.

Imports nothing heavy: the page and `--help` read it before torch is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionConfig:
    models_dir: str | None = None  # None: FRAMEPACK_MODELS_DIR, else the Hugging Face cache
    vram_budget_gb: float | None = None  # None: what is free on the GPU (a request may ask for less)
    ram_budget_gb: float | None = None  # None: what is available less a reserve (memory/ram.py)
    device: str | None = None  # None: the CUDA GPU when there is one, else the CPU

    @classmethod
    def from_args(cls, args) -> SessionConfig:
        """From parsed flags (`--models-dir`, `--vram-budget`, `--ram-budget`); a flag a command lacks is None."""
        flag = lambda name: getattr(args, name, None)  # noqa: E731
        return cls(models_dir=flag("models_dir"), vram_budget_gb=flag("vram_budget"),
                   ram_budget_gb=flag("ram_budget"), device=flag("device"))
