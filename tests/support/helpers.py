"""Shared test helpers: requests for the tiny set, and a run's events collected in order."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from framepack_core.events import Preview, SectionDone, Stage, Step
from framepack_core.request import Request
from framepack_core.engine.session import Session
from framepack_core.engine.session_config import SessionConfig
from framepack_core.starts import FromPicture, begin


def tiny_request(picture, **fields) -> Request:
    """A request for the tiny set at 128, one second, three steps; `fields` by their flat names."""
    base = dict(image=picture, model="tiny", prompt="a red balloon rises", seconds=1, steps=3, resolution=128)
    return Request.from_fields(**(base | fields))


def cpu_session(loader=None, engine=None, manager_factory=None, **config) -> Session:
    """A session on the CPU with the test's own loader, engine (a stand-in for make_video) or manager."""
    return Session(SessionConfig(device="cpu", **config), loader=loader, engine=engine,
                   manager_factory=manager_factory)


def fixed_session(models, manager=None, **options) -> Session:
    """A session that hands out these models (and this manager, else the default for the CPU)."""
    factory = (lambda *args: manager) if manager is not None else None
    return cpu_session(lambda name, models_dir=None, progress=None: models, manager_factory=factory, **options)


def run_events(request: Request, models, output: str | Path, manager=None,
               on_event: Callable | None = None) -> list:
    """Every event of one run through the run path, written to `output`. `on_event(event, run)` sees
    each as it comes (and may stop the run). A request the validator refuses gives [Failed]."""
    from framepack_core.events import Failed

    request = replace(request, output=replace(request.output, path=Path(output)))
    try:
        run = begin(FromPicture(request))
    except ValueError as error:
        return [Failed(str(error))]
    return executed(run, models, manager, on_event)


def executed(run, models, manager=None, on_event: Callable | None = None) -> list:
    """Every event of `run` (started, resumed, extended, ...) executed on `models`; `on_event` as for run_events."""
    events = []

    def emit(event):
        events.append(event)
        if on_event is not None:
            on_event(event, run)

    run.execute(fixed_session(models, manager), emit)
    return events


class ScriptedEngine:
    """Stands in for generation.make_video: `sections` x `steps` steps, stopping after a step like the real one
    (and returning what it made, as the real one does)."""

    def __init__(self, sections=2, steps=3, step_seconds=0.0, gate: threading.Event | None = None,
                 hold_after_section: bool = False):
        """`gate`: each step waits for it. `hold_after_section`: the engine clears the gate itself as a
        section ends, so the next section's first step waits until the test sets it again."""
        self.sections, self.steps, self.step_seconds, self.gate = sections, steps, step_seconds, gate
        self.hold_after_section = hold_after_section
        self.models_seen = []

    def __call__(self, work, models, manager):
        from framepack_core.engine.work import Made

        self.models_seen.append(models)
        emit, cancel, progress_video = work.emit, work.cancel, work.video
        made = dict(width=160, height=96)
        for section in range(self.sections):
            emit(Stage("sampling", f"Sampling section {section + 1} of {self.sections}"))
            for step in range(1, self.steps + 1):
                if self.gate is not None:
                    self.gate.wait(5)
                time.sleep(self.step_seconds)
                emit(Step(section, self.sections, step, self.steps))
                emit(Preview(section, step, np.zeros((4, 9 * 6, 3), np.uint8)))
                if cancel.is_set():
                    return Made(**made, stopped=True)
            progress_video.write_bytes(b"video after section %d" % section)
            made |= dict(sections_done=section + 1, frames=37 * (section + 1))
            if self.hold_after_section:
                self.gate.clear()
            emit(SectionDone(section, self.sections, made["frames"], progress_video, 0.1))
        return Made(**made)
