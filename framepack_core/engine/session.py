"""What outlives one run in a process: the loaded model set, the device and its budgets (a
SessionConfig, from the flags), and the engine that makes a video (generation.make_video; tests
hand in a stand-in here, the one place it is injected).

Models load on the first run that needs them (so a page opens in seconds) and stay in host
memory for the next; asking for another set releases the old one first. After each run the
device is given back: a page may sit idle for hours, and uploading weights again costs seconds.
"""
from __future__ import annotations

import functools
import gc
from typing import Callable

import torch

from memory import (
    GiB,
    ModelManager,
    configure_allocator,
    default_device,
    default_ram_budget,
    release_free_host_memory,
    weight_ram_budget,
)

from ..events import Event, Stage, StageName
from .memory_plan import make_manager
from ..request import Request
from .session_config import SessionConfig


class Session:
    def __init__(self, config: SessionConfig | None = None, *, loader: Callable | None = None,
                 manager_factory: Callable[..., ModelManager] | None = None, engine: Callable | None = None):
        """`loader`, `manager_factory` and `engine` are for tests (and benches): their own models, memory
        manager, or a scripted stand-in for `generation.make_video(work, models, manager) -> Made`."""
        self.config = config = config or SessionConfig()
        # Before anything of this process starts CUDA (a run's models, its kernels' probes): the allocator
        # reads its configuration once (memory/cap.py). A process that makes no videos never sets it.
        configure_allocator()
        self.device = torch.device(config.device) if config.device is not None else default_device()
        self._loader = loader
        self._manager_factory = manager_factory or make_manager
        self._engine = engine
        self._loaded: tuple[str, object] | None = None

    @property
    def engine(self) -> Callable:
        if self._engine is None:
            self._engine = functools.partial(_make_video, session=self)
        return self._engine

    def models(self, name: str, emit: Callable[[Event], None] = lambda event: None):
        if self._loaded is not None and self._loaded[0] == name:
            return self._loaded[1]
        self._loaded = None  # release the other set before loading this one
        gc.collect()
        loader = self._loader
        if loader is None:
            from ..models.loading import load_models as loader
        emit(Stage(StageName.LOADING, f"Loading the {name} models"))
        models = loader(name, models_dir=self.config.models_dir, progress=lambda message: emit(Stage(StageName.LOADING, message)))
        self._loaded = (name, models)
        return models

    def prepare(self, request: Request, emit: Callable[[Event], None]):
        """The request's model set and a manager for the device, sized for this request."""
        models = self.models(request.model, emit)
        budget = request.speed.vram_budget_gb or self.config.vram_budget_gb
        manager = self._manager_factory(self.device, budget, models, request)
        if getattr(manager, "manages_device", False) and getattr(manager, "ram_budget_bytes", 0) is None:
            ram_gb = self.config.ram_budget_gb
            ram = int(ram_gb * GiB) if ram_gb else default_ram_budget()
            manager.ram_budget_bytes = weight_ram_budget(ram)  # pinned copies only as far as RAM allows
        return models, manager

    def release(self, manager: ModelManager | None) -> None:
        if manager is not None:
            manager.release()
        gc.collect()
        release_free_host_memory()  # the run's freed buffers back to the OS: a long session stays flat
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _make_video(work, models, manager, session: Session):
    """generation.make_video, on as many processes (one per device) as the request asks for."""
    if work.request.speed.gpus > 1:
        from ..parallel.launch import make_video_parallel

        return make_video_parallel(work, models, manager, session.config, type(session))
    from .generation import make_video  # the model libraries, only when a video is made

    return make_video(work, models, manager)
