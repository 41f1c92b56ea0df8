"""The engine on a background thread, one run at a time; its events cross a queue to the page.

Models load on the first run (not at start-up, so the page opens in seconds) and stay in host
memory for the next run; choosing another model set releases the old one first. Stop sets the
run's cancel flag, which the engine checks after every sampling step.
"""
from __future__ import annotations

import gc
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from framepack_core import Failed, Finished, SectionDone, Stage, run as engine_run
from framepack_core.schedule import FPS
from memory import ModelManager, default_device, release_free_host_memory
from memory.host import limit_heap_arenas

log = logging.getLogger(__name__)

_DONE = object()  # put on the queue after the last event of a run


class WorkerBusy(RuntimeError):
    """A run is still going; the page says so instead of starting a second one."""


class Job:
    """One run: its event queue and its cancel flag."""

    def __init__(self, number: int):
        self.number = number
        self.cancel = threading.Event()
        self.events: queue.Queue = queue.Queue()
        self.finished = threading.Event()  # set once the thread has released everything

    def stop(self) -> None:
        self.cancel.set()

    def batches(self, timeout: float = 1.0):
        """Lists of the events waiting now; [] after `timeout` seconds of silence (to tick clocks).

        Draining keeps the page current when steps come faster than the browser can draw them:
        the caller shows the newest preview of a batch and skips the older ones.
        """
        while True:
            try:
                first = self.events.get(timeout=timeout)
            except queue.Empty:
                yield []
                continue
            batch = [first]
            while True:
                try:
                    batch.append(self.events.get_nowait())
                except queue.Empty:
                    break
            done = any(e is _DONE for e in batch)
            batch = [e for e in batch if e is not _DONE]
            if batch:
                yield batch
            if done:
                return


class Worker:
    def __init__(self, models_dir: str | None = None, device: str | torch.device | None = None,
                 loader: Callable | None = None, runner: Callable = engine_run,
                 manager_factory: Callable[..., ModelManager] | None = None):
        self.models_dir = models_dir
        self.device = torch.device(device) if device is not None else default_device()
        self._loader = loader
        self._runner = runner
        self._manager_factory = manager_factory or self._make_manager
        self._models: tuple[str, object] | None = None
        self._job: Job | None = None
        self._count = 0
        self._lock = threading.Lock()
        # Per-section snapshots of the video so far live here (see _snapshot).
        self.scratch = Path(tempfile.mkdtemp(prefix="framepack-ui-"))
        limit_heap_arenas(2)  # many runs on fresh threads: keep the process's memory flat (see memory/host.py)

    @property
    def busy(self) -> bool:
        job = self._job
        return job is not None and not job.finished.is_set()

    def submit(self, request, model: str, output: str | os.PathLike, vram_budget_gb: float | None = None,
               wait: float = 30.0) -> Job:
        """Start a run of the validated `request`. A run being stopped gets `wait` seconds to end."""
        with self._lock:
            previous = self._job
            if previous is not None and not previous.finished.wait(wait):
                raise WorkerBusy("A video is still being made; press Stop or wait for it to finish.")
            self._count += 1
            job = self._job = Job(self._count)
        shutil.rmtree(self.scratch / str(job.number - 1), ignore_errors=True)
        thread = threading.Thread(target=self._work, args=(job, request, model, Path(output), vram_budget_gb),
                                  name=f"framepack-run-{job.number}", daemon=True)
        thread.start()
        return job

    def stop(self) -> bool:
        """Ask the current run to end after its current step; False if nothing is running."""
        job = self._job
        if job is None or job.finished.is_set():
            return False
        job.stop()
        return True

    def close(self) -> None:
        """Stop any run and delete the section snapshots (the outputs folder is left alone)."""
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _work(self, job: Job, request, model: str, output: Path, vram_budget_gb: float | None) -> None:
        started = time.monotonic()
        emit = self._emitter(job)
        manager = None
        try:
            models = self._models_for(model, emit)
            if job.cancel.is_set():  # Stop pressed while loading: nothing was made
                emit(Finished(None, 0, FPS, 0, 0, 0, request.seed, time.monotonic() - started, stopped=True))
                return
            output.parent.mkdir(parents=True, exist_ok=True)
            manager = self._manager_factory(vram_budget_gb, models, request)
            self._runner(request, models, output, emit, job.cancel, manager)
        except Exception as error:  # the engine reports its own failures; this is loading and the rest
            log.exception("run failed")
            emit(Failed(_loading_message(error), traceback.format_exc()))
        finally:
            # Give the GPU back between runs: the page may sit idle for hours, and the next run may
            # use another model set or budget. Uploading the weights again costs seconds, not minutes.
            if manager is not None:
                manager.release()
            gc.collect()
            release_free_host_memory()  # the run's freed buffers back to the OS: a long session stays flat
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            job.finished.set()
            job.events.put(_DONE)

    def _models_for(self, name: str, emit):
        if self._models is not None and self._models[0] == name:
            return self._models[1]
        self._models = None  # release the other set before loading this one
        gc.collect()
        loader = self._loader
        if loader is None:
            from framepack_core.models import load_models as loader  # heavy imports, first run only
        emit(Stage("loading", f"Loading the {name} models"))
        models = loader(name, models_dir=self.models_dir, progress=lambda message: emit(Stage("loading", message)))
        self._models = (name, models)
        return models

    def _make_manager(self, budget_gb: float | None, models, request) -> ModelManager:
        from .cli import make_manager  # the command line's sizing of the budget, shared

        return make_manager(self.device, budget_gb, models, request.resolution, request.window)

    def _emitter(self, job: Job) -> Callable:
        def emit(event) -> None:
            if isinstance(event, SectionDone):
                event = replace(event, video=self._snapshot(job, event))
            job.events.put(event)
        return emit

    def _snapshot(self, job: Job, event: SectionDone) -> Path:
        """A private copy of the video so far.

        The engine rewrites its in-progress file after every section and renames it at the end,
        possibly before the page has read it; the copy stays put until the next run.
        """
        folder = self.scratch / str(job.number)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"section-{event.section + 1}.mp4"
        # A copy, not a hard link: a link would follow the file if it were ever rewritten in place.
        # It costs little next to a section's sampling.
        shutil.copyfile(event.video, target)
        return target


def _loading_message(error: Exception) -> str:
    # ModelsUnavailableError by name: importing framepack_core.models here would slow the start-up.
    if type(error).__name__ == "ModelsUnavailableError" or isinstance(error, ValueError):  # BudgetError is one
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):  # placing the models on the GPU: the engine's advice holds
        from framepack_core.engine import _user_message

        return _user_message(error)
    return f"Could not prepare the models: {error}"
