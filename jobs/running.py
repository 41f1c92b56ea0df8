"""One job through the one run path, wherever it runs (this process or a Ray worker).

    Request.from_fields(job settings) -> begin(FromPicture or Resume) -> run.execute(session, emit)

The run's name is claimed once, by the process that owns the queue, and kept in the job: a
retry or a resume after a crash writes the same files, so a job never leaves two videos.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from framepack_core.events import Failed, SectionDone, Status, Step
from framepack_core.run.files import RunFiles, claim_files, release_claim
from framepack_core.run.progress import CostedProgress

from .intake import job_request


class NotNow(RuntimeError):
    """Raised by an `execute` that cannot take the job now (the page is making a video): back to the queue."""


@dataclass(frozen=True)
class JobResult:
    status: Status  # finished | stopped | failed | interrupted (back to the queue)
    message: str = ""
    video: str | None = None  # file name in the outputs folder
    sections_done: int | None = None  # the run's count at its end; None: not known (it failed outside the run)

    def as_dict(self) -> dict:
        return asdict(self)


def claim_run_name(outputs: Path, settings: dict) -> str:
    """A fresh `<date>-<time>_<seed>` name in the outputs folder, held by its record file."""
    return claim_files(Path(outputs), int(settings.get("seed", 0))).name


def start_run(request, files: RunFiles, resuming: bool):
    """The one place a job's run begins. A job that was interrupted (process killed, worker lost, Ctrl+C)
    resumes from its last finished section (from the latents kept beside the run); one with nothing usable
    kept (stopped before its first section) starts again under the same name (starts/resume.py)."""
    from framepack_core.starts import FromPicture, Resume, begin

    start = FromPicture(request)
    return begin(Resume(files.video, otherwise=start) if resuming else start)


def run_job(settings: dict, run_name: str, outputs: Path, execute: Callable, emit: Callable,
            on_progress: Callable[[float, int], bool], interrupted: Callable[[], bool],
            resuming: bool = False) -> JobResult:
    """Run one job. `execute(run, emit)` is `run.execute(session, emit)` here, or the page's worker thread;
    `on_progress(fraction, sections_done)` answers whether to stop it (cancel), and `interrupted()`
    whether the whole queue is stopping (the job then goes back to the queue)."""
    outputs = Path(outputs)
    files = RunFiles(outputs, run_name)
    try:
        if "finishing" in settings:  # an upscale or interpolation (jobs/finishing_jobs.py)
            from .finishing_jobs import start_finishing

            run = start_finishing(settings, files, resuming)
        else:
            run = start_run(job_request(settings, outputs, path=files.video), files, resuming)
    except (ValueError, TypeError) as error:
        release_claim(files)  # refused before it started: no "{}" left in the outputs folder
        return JobResult(Status.FAILED, str(error))
    state = {"sections": 0, "cancelled": False}
    work = CostedProgress()  # decodes and writes counted with the steps: not "100%" through the last decode

    def watch(event) -> None:
        work.update(event)
        if isinstance(event, SectionDone):
            state["sections"] = event.section + 1
        if isinstance(event, (Step, SectionDone)):
            stop = on_progress(min(work.fraction, 0.999), state["sections"])
        else:
            stop = False
        if stop:
            state["cancelled"] = True
        if stop or interrupted():
            run.stop()
        emit(event)

    try:
        outcome = execute(run, watch)
    except NotNow as reason:
        return JobResult(Status.INTERRUPTED, str(reason))
    if isinstance(outcome, Failed):
        return JobResult(Status.FAILED, outcome.message, sections_done=state["sections"])
    video = outcome.video.name if outcome.video else None
    if outcome.stopped and not state["cancelled"] and interrupted():
        return JobResult(Status.INTERRUPTED, "interrupted; resumes", video, outcome.sections)
    if outcome.stopped:
        return JobResult(Status.STOPPED, "cancelled", video, outcome.sections)
    return JobResult(Status.FINISHED, "", video, outcome.sections)
