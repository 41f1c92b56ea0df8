"""What every run of a process shares, from the command line's flags once: where the models are,
the VRAM and RAM budgets, the device. The page, `generate`, `queue run` and each Ray worker get
the same object (it is small, frozen and picklable); `session.Session` is built from it.

Imports nothing heavy: the page and `--help` read it before torch is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import SETTINGS, Part, settings_of


@dataclass(frozen=True)
class SessionConfig:
    """The settings table's session flags (Part.SESSION) and the VRAM budget; their defaults: the table's."""
    models_dir: str | None = SETTINGS["models_dir"].default  # None: FRAMEPACK_MODELS_DIR, else the HF cache
    vram_budget_gb: float | None = SETTINGS["vram_budget_gb"].default  # None: what is free (a request may ask less)
    ram_budget_gb: float | None = SETTINGS["ram_budget_gb"].default  # None: what is available less a reserve
    device: str | None = None  # None: the CUDA GPU when there is one, else the CPU (tests and workers choose)

    @classmethod
    def from_args(cls, args) -> SessionConfig:
        """From parsed flags (the table's: `--models-dir`, `--vram-budget`, `--ram-budget`); a flag a command
        lacks is None."""
        flags = (*settings_of(Part.SESSION), SETTINGS["vram_budget_gb"])
        return cls(**{s.name: getattr(args, s.dest, None) for s in flags}, device=getattr(args, "device", None))
