"""Shared test helpers: requests for the tiny set, and a run's events collected in order."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from framepack_core.request import Request
from framepack_core.run import Run
from framepack_core.session import Session


def tiny_request(picture, **fields) -> Request:
    """A request for the tiny set at 128, one second, three steps; `fields` by their flat names."""
    base = dict(image=picture, model="tiny", prompt="a red balloon rises", seconds=1, steps=3, resolution=128)
    return Request.from_fields(**(base | fields))


def fixed_session(models, manager=None, **options) -> Session:
    """A session that hands out these models (and this manager, else the default for the CPU)."""
    factory = (lambda *args: manager) if manager is not None else None
    return Session(device="cpu", loader=lambda name, models_dir=None, progress=None: models,
                   manager_factory=factory, **options)


def run_events(request: Request, models, output: str | Path, manager=None,
               on_event: Callable | None = None, make_video: Callable | None = None) -> list:
    """Every event of one run through the run path, written to `output`. `on_event(event, run)` sees
    each as it comes (and may stop the run). A request the validator refuses gives [Failed]."""
    from framepack_core.events import Failed

    request = replace(request, output=replace(request.output, path=Path(output)))
    try:
        run = Run.start(request)
    except ValueError as error:
        return [Failed(str(error))]
    events = []

    def emit(event):
        events.append(event)
        if on_event is not None:
            on_event(event, run)

    options = {"make_video": make_video} if make_video else {}
    run.execute(fixed_session(models, manager), emit, **options)
    return events
