"""Finishing runs (upscale, interpolate) as queued jobs: the same queue, leases, Stop and resume as a
generation's jobs. A job's settings hold the finishing request under `finishing` (and a `prompt` line that the
queue's listings show); its run is a `FinishingRun` named by the job's claimed run name."""
from __future__ import annotations

from framepack_core.events import Status
from framepack_core.run.files import RunFiles, read_any
from framepack_core.run.record import FinishingRecord

from .store import JobStore

KEY = "finishing"


def finishing_settings(request) -> dict:
    """A job's settings for `request` (a FinishRequest), checked as a run's start checks it (ValueError, one
    sentence); the model file is looked for, not loaded."""
    from framepack_core.finishing.methods import rife_file
    from framepack_core.finishing import upscalers

    request, _ = request.validated()
    if request.operation == "upscale" and request.model is not None and request.model not in upscalers.NAMED:
        upscalers.resolve(request.model, request.factor, request.upscalers)  # refuses an unknown name
    elif request.operation == "interpolate":
        rife_file(request.model, request.rife_folder)
    fields = request.fields() | {"output": None, "folder": None}  # the queue's outputs folder and run name decide
    return {KEY: fields, "prompt": f"{request.operation} x{request.factor}: {request.source.name}"}


def add_finishing_job(store: JobStore, request) -> int:
    settings = finishing_settings(request)
    return store.add(settings, label=f"{request.operation} x{request.factor}")


def start_finishing(settings: dict, files: RunFiles, resuming: bool):
    """The job's run: resumed after its last whole part when an earlier attempt left parts, else started under
    the job's run name."""
    from framepack_core.finishing.finishing_run import FinishingRun
    from framepack_core.finishing.placement import device_and_budget
    from framepack_core.finishing.request import FinishRequest

    device, budget = device_and_budget(None)
    if resuming and _unfinished(files):
        return FinishingRun.resume(files.record, device, budget)
    fields = settings[KEY] | {"output": str(files.video), "folder": str(files.folder)}
    return FinishingRun.start(FinishRequest.from_fields(fields), device, budget)


def _unfinished(files: RunFiles) -> bool:
    try:
        record = read_any(files)
    except (OSError, ValueError):
        return False
    return isinstance(record, FinishingRecord) and record.status != Status.FINISHED
