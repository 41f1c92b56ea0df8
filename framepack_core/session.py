"""What outlives one run in a process: the loaded model set, the device and its VRAM budget.

Models load on the first run that needs them (so a page opens in seconds) and stay in host
memory for the next; asking for another set releases the old one first. After each run the
device is given back: a page may sit idle for hours, and uploading weights again costs seconds.
"""
from __future__ import annotations

import gc
from typing import Callable

import torch

from memory import (
    GiB,
    ModelManager,
    default_device,
    default_ram_budget,
    release_free_host_memory,
    weight_ram_budget,
)

from .events import Event, Stage
from .memory_plan import make_manager
from .request import Request


class Session:
    def __init__(self, models_dir: str | None = None, device: str | torch.device | None = None,
                 vram_budget_gb: float | None = None, loader: Callable | None = None,
                 manager_factory: Callable[..., ModelManager] | None = None, ram_budget_gb: float | None = None):
        self.models_dir = models_dir
        self.device = torch.device(device) if device is not None else default_device()
        self.vram_budget_gb = vram_budget_gb
        self.ram_budget_gb = ram_budget_gb  # None: what is available less a reserve (memory/ram.py)
        self._loader = loader  # tests hand in their own
        self._manager_factory = manager_factory or make_manager
        self._loaded: tuple[str, object] | None = None

    def models(self, name: str, emit: Callable[[Event], None] = lambda event: None):
        if self._loaded is not None and self._loaded[0] == name:
            return self._loaded[1]
        self._loaded = None  # release the other set before loading this one
        gc.collect()
        loader = self._loader
        if loader is None:
            from .models.loading import load_models as loader
        emit(Stage("loading", f"Loading the {name} models"))
        models = loader(name, models_dir=self.models_dir, progress=lambda message: emit(Stage("loading", message)))
        self._loaded = (name, models)
        return models

    def prepare(self, request: Request, emit: Callable[[Event], None]):
        """The request's model set and a manager for the device, sized for this request."""
        models = self.models(request.model, emit)
        budget = request.speed.vram_budget_gb or self.vram_budget_gb
        manager = self._manager_factory(self.device, budget, models, request)
        if getattr(manager, "manages_device", False) and getattr(manager, "ram_budget_bytes", 0) is None:
            ram = int(self.ram_budget_gb * GiB) if self.ram_budget_gb else default_ram_budget()
            manager.ram_budget_bytes = weight_ram_budget(ram)  # pinned copies only as far as RAM allows
        return models, manager

    def release(self, manager: ModelManager | None) -> None:
        if manager is not None:
            manager.release()
        gc.collect()
        release_free_host_memory()  # the run's freed buffers back to the OS: a long session stays flat
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
