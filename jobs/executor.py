"""Work through the queue in this process, one job after another.

The command line's `queue run` and the page both use this; they differ in `execute`: the
command line runs the job on its own thread, the page hands it to its worker thread so that
Start and the queue never make two videos at once.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from framepack_core.events import Status

from .leases import LeaseKeeper
from .running import JobResult, claim_run_name, run_job
from .store import Job, JobStore, this_owner


def apply_result(store: JobStore, job: Job, result: JobResult, owner: str | None = None) -> None:
    """A job's outcome into the queue, by the holder of its lease (a lost lease writes nothing). Its
    sections done are the result's (the run's own count, as its record has it), not the last progress
    report: a Ray worker reports only when the head polls it, so a section written between the last
    poll and a cancel would otherwise be missing from the queue."""
    if result.status == Status.INTERRUPTED:
        store.requeue(job.id, result.message, owner, result.sections_done)
    else:
        store.finish(job.id, result.status, result.message, result.video, owner, result.sections_done)


def prepare(store: JobStore, job: Job) -> tuple[str, bool]:
    """The job's run name (claimed on its first attempt) and whether an earlier attempt left work behind."""
    if job.run_name:
        return job.run_name, True
    name = claim_run_name(store.outputs, job.settings)
    store.set_run_name(job.id, name)
    return name, False


class LocalExecutor:
    def __init__(self, store: JobStore, session=None, on_event: Callable | None = None,
                 on_job: Callable | None = None, execute: Callable | None = None):
        """`execute(run, emit)`: how a run is executed (the page: on its worker thread); without it, here,
        on this thread, with `session` (a framepack_core Session, built from the flags' SessionConfig).
        `on_event(job, event)` sees every event (the page's live preview); `on_job(job)` a job's start."""
        if session is None and execute is None:
            raise ValueError("a LocalExecutor needs the session to run jobs with, or an `execute`")
        self.store = store
        self.session = session
        self._execute = execute
        self.on_event = on_event or (lambda job, event: None)
        self.on_job = on_job or (lambda job: None)
        self.interrupt = threading.Event()  # Ctrl+C: stop after the current step; the job resumes next time
        self.owner = this_owner()
        self.leases = LeaseKeeper(lambda job_id: self.store.renew(job_id, self.owner))
        self.report_every = 0.25  # seconds between progress writes (and cancel reads) within a section

    def _here(self, run, emit):
        return run.execute(self.session, emit)

    def run_until_empty(self) -> int:
        """Run queued jobs until none is left or `interrupt` is set; the number of jobs run."""
        self.store.recover()
        count = 0
        while not self.interrupt.is_set():
            if not self.run_one():
                break
            count += 1
        return count

    def run_one(self) -> Job | None:
        job = self.store.claim(self.owner)
        if job is None:
            return None
        self.leases.hold(job.id)
        try:
            self.on_job(job)
            self.store.set_worker(job.id, f"pid {os.getpid()}")
            apply_result(self.store, job, self.execute(job), self.owner)
        finally:
            self.leases.release(job.id)
        return job

    def execute(self, job: Job) -> JobResult:
        try:
            name, resuming = prepare(self.store, job)
            last = [0.0, -1]

            def on_progress(fraction: float, sections: int) -> bool:
                now = time.monotonic()
                if now - last[0] < self.report_every and sections == last[1]:
                    return False  # a few writes a second at most (and every finished section); cancel read with them
                last[:] = [now, sections]
                return self.store.report(job.id, fraction, sections, self.owner)

            # A lost lease (this process was frozen past it, and the job given away) stops the run as
            # Ctrl+C would, and its outcome is not written.
            return run_job(job.settings, name, Path(self.store.outputs), self._execute or self._here,
                           lambda event: self.on_event(job, event), on_progress,
                           lambda: self.interrupt.is_set() or self.leases.lost(job.id), resuming=resuming)
        except Exception as error:  # noqa: BLE001 - one job's failure must not end the queue
            return JobResult(Status.FAILED, f"{type(error).__name__}: {error}")
