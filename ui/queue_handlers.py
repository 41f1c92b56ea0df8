"""What the page's queue does, in plain Python (no gradio here): add the form as a job, list the
jobs, arrange them, import and export, and work through them on the page's worker thread.

Every tab and browser reads the same SQLite store (jobs.store), so they all see one queue; the
page polls it. The job running in this process shows its live preview and video so far here.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from framepack_core.events import Preview, SectionDone, Status
from framepack_core.settings import DEFAULTS
from jobs.executor import LocalExecutor
from jobs.intake import add_job, export_jobs, import_file
from jobs.running import NotNow
from jobs.store import JobStore, StoreError

from .handlers import Handlers, contact_sheet
from .progress import RunProgress, idle_html
from .worker import WorkerBusy

log = logging.getLogger(__name__)
COLUMNS = ["#", "status", "done", "picture", "prompt", "video / message"]  # short headings: no mid-word breaks
ACTIONS = ("up", "down", "cancel", "retry", "delete")


@dataclass
class Live:
    """The job this page's process is running now, as its events left it."""
    job_id: int | None = None
    progress: RunProgress | None = None
    preview: object = None
    video: str | None = None


class QueueHandlers:
    def __init__(self, handlers: Handlers, store: JobStore | None = None):
        self.handlers = handlers
        self.store = store or JobStore(handlers.settings.outputs)
        self.live = Live()
        self.running = threading.Event()  # the page works through the queue while this is set
        self._thread: threading.Thread | None = None
        self.executor = LocalExecutor(self.store, on_event=self._seen, on_job=self._started, execute=self._on_worker)

    # --- the buttons ---------------------------------------------------------------------------------------
    def add(self, form: dict) -> str:
        """"Add to queue": the current settings (as Start would take them) become a job."""
        try:
            job_id = add_job(self.store, self.handlers.request_fields(form))
        except ValueError as error:
            return f"Not queued: {error}"
        waiting = [job.id for job in self.store.jobs() if job.status == Status.QUEUED]
        place = f", number {waiting.index(job_id) + 1} in line" if job_id in waiting else ""
        state = "" if self.running.is_set() else " (the queue is paused: tick \"Work through the queue\" to start it)"
        return f"Queued as job {job_id}{place}; see the Queue tab{state}."

    def act(self, action: str, job_id) -> str:
        try:
            job_id = int(job_id)
        except (TypeError, ValueError):
            return "Pick a job first (click its row)."
        try:
            if self.store.get(job_id) is None:
                return f"There is no job {job_id}."
            if action in ("up", "down"):
                self.store.move(job_id, -1 if action == "up" else 1)
            else:
                getattr(self.store, action)(job_id)
        except StoreError as error:
            return str(error)
        return f"Job {job_id}: {action} done."

    def clear_finished(self) -> str:
        try:
            return f"Removed {self.store.clear_finished()} finished job(s) from the list (their videos stay)."
        except StoreError as error:
            return str(error)

    def export(self) -> str:
        """The queue as a JSON file under the outputs folder; its path (for the download button). In a folder of
        its own: the outputs folder's top level holds the runs' records, which a JSON list is not."""
        path = self.store.outputs / "queue-exports" / f"queue-export-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(export_jobs(self.store), indent=2) + "\n", encoding="utf-8")
        return str(path)

    def import_(self, path) -> str:
        if not path:
            return "Choose a JSON, JSON Lines or CSV file first."
        # Its rows name pictures on this machine: only from the outputs folder and the folders named at start.
        allowed = [self.handlers.settings.outputs, *self.handlers.settings.import_folders]
        added, errors = import_file(self.store, Path(path), allowed)
        lines = [f"Queued {len(added)} job(s)."] + [f"line {line}: {message}" for line, message in errors]
        return "  \n".join(lines)

    # --- what the page shows ---------------------------------------------------------------------------------
    def jobs(self) -> list:
        """The store's jobs; none when its file cannot be used (the list's one row says why: `problem`)."""
        try:
            return self.store.jobs()
        except StoreError:
            return []

    def problem(self) -> str | None:
        try:
            self.store.version()
        except StoreError as error:
            return str(error)
        return None

    def version(self) -> tuple:
        """Changes whenever any job changes (the list redraws only then); a store that cannot be read is one."""
        try:
            return self.store.version()
        except StoreError as error:
            return (str(error),)

    def rows(self) -> list[list]:
        rows = []
        for job in self.jobs():
            rows.append([job.id, job.status, f"{job.progress * 100:.0f}%", job.label, job.prompt,
                         job.video or job.message])
        problem = self.problem() if not rows else None
        return rows or ([["", Status.FAILED, "", "", "", problem]] if problem else [])

    def thumbnails(self) -> list[tuple[str, str]]:
        """(picture, caption) of every job, in queue order."""
        return [(str(self.store.outputs / job.settings["image"]), f"#{job.id} {job.status}")
                for job in self.jobs() if job.settings.get("image")]

    def video(self, job_id) -> str | None:
        try:
            job = self.store.get(int(job_id))
        except (TypeError, ValueError):
            return None
        if job is None or not job.video:
            return None
        path = self.store.outputs / job.video
        return str(path) if path.exists() else None

    def live_view(self) -> tuple[str, object, str | None]:
        """The progress, preview and video so far of the job running in this process."""
        live = self.live
        if live.job_id is None:
            queued = sum(job.status == Status.QUEUED for job in self.jobs())
            state = "on" if self.running.is_set() else "paused"
            return idle_html(f"Queue {state}; {queued} job(s) waiting."), None, None
        return live.progress.html(), live.preview, live.video

    # --- working through the queue on the page's worker ---------------------------------------------------
    def set_running(self, on: bool) -> None:
        if on:
            self.running.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="framepack-queue", daemon=True)
                self._thread.start()
        else:
            self.running.clear()

    def close(self) -> None:
        self.running.clear()
        self.executor.interrupt.set()

    def _loop(self) -> None:
        try:
            self.store.recover()
            while self.running.is_set() and not self.executor.interrupt.is_set():
                if self.handlers.worker.busy or not self.executor.run_one():
                    time.sleep(1.0)
        except StoreError as error:  # the queue's file is damaged or read-only: its sentence, no traceback
            log.warning("the page stopped working through the queue: %s", error)
            self.running.clear()
        except Exception:
            log.exception("the page stopped working through the queue")
            self.running.clear()

    def _on_worker(self, run, emit):
        """A job's run on the page's worker thread: Start and the queue never make two videos at once."""
        try:
            submission = self.handlers.worker.submit(run, wait=0, label=f"Queue job {self.live.job_id} (Queue tab)")
        except WorkerBusy:
            # Start was pressed in between: the job goes back to the queue, untouched.
            raise NotNow("waiting for the page's own video") from None
        for batch in submission.batches():
            for event in batch:
                emit(event)
        submission.finished.wait()
        return run.outcome

    def _started(self, job) -> None:
        self.live = Live(job.id, RunProgress())

    def _seen(self, job, event) -> None:
        live = self.live
        live.progress.update(event)
        if isinstance(event, Preview):
            live.preview = contact_sheet(event.image, int(job.settings.get("window", DEFAULTS["window"])))
        elif isinstance(event, SectionDone):
            live.video = str(event.video)
