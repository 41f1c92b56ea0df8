"""The page's runs, on a background thread, one at a time; their events cross a queue to the page.

The run itself is synchronous (framepack_core.run.lifecycle); the command line calls it on its main thread.
The page's runs (Start, Resume, Extend, the API, and the page's queue's jobs) all come through here,
so one model set and one GPU serve them in turn.
"""
from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from framepack_core.events import SectionDone
from framepack_core.engine.session_config import SessionConfig

_DONE = object()  # put on the queue after the last event of a run


class WorkerBusy(RuntimeError):
    """A run is still going; the page says so instead of starting a second one."""


def busy_message(label: str) -> str:
    """The one sentence for a Start refused because `label` (e.g. "Queue job 3") is making a video."""
    return (f"{label} is making a video on this machine now: press Stop (Generate tab) to end it, or Add to queue to make "
            "yours after it. Nothing was started.")


class Submission:
    """One run handed to the worker: its events as they come. (Not a queue's job, jobs.store.Job: a request
    waiting in the queue's database; a queued job that runs on the page is submitted like any run.)"""

    def __init__(self, number: int, run, label: str = "A page's run"):
        self.number = number
        self.run = run
        self.label = label  # what is making the video, in the words of a refused Start ("Queue job 3")
        self.events: queue.Queue = queue.Queue()
        self.finished = threading.Event()  # set once the thread has released everything

    @property
    def cancel(self) -> threading.Event:
        return self.run.cancel

    def stop(self) -> None:
        self.run.stop()

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
    def __init__(self, config: SessionConfig | None = None, session=None):
        """`session`: a framepack_core Session (tests hand in theirs); else one is made from `config` on
        first use: it imports torch, which the page does not need in order to open."""
        self._session = session
        self.config = config or SessionConfig()
        self._submitted: Submission | None = None
        self._count = 0
        self._lock = threading.Lock()
        # Per-section snapshots of the video so far live here (see _snapshot).
        self.scratch = Path(tempfile.mkdtemp(prefix="framepack-ui-"))

    @property
    def session(self):
        if self._session is None:
            from framepack_core.engine.session import Session  # torch and the memory manager: on first use

            self._session = Session(self.config)
        return self._session

    @property
    def busy(self) -> bool:
        submission = self._submitted
        return submission is not None and not submission.finished.is_set()

    def check_free(self) -> None:
        """WorkerBusy, naming what runs, unless a new run could start now (nothing runs, or it is stopping).
        Asked before a run writes anything, so that a refused Start leaves no files behind."""
        submission = self._submitted
        if submission is not None and not submission.finished.is_set() and not submission.cancel.is_set():
            raise WorkerBusy(busy_message(submission.label))

    def running(self) -> Submission | None:
        """The submission making a video now (its `label` says whose: "Queue job 3"), None when nothing is."""
        submission = self._submitted
        return submission if submission is not None and not submission.finished.is_set() else None

    def submit(self, run, wait: float = 30.0, label: str = "A page's run") -> Submission:
        """Start a run (framepack_core.run.lifecycle.Run). A run being stopped gets `wait` seconds to end; one still
        going is refused at once (WorkerBusy): the page says what runs instead of waiting for it."""
        with self._lock:
            previous = self._submitted
            if previous is not None and not previous.finished.is_set():
                if not previous.cancel.is_set() or not previous.finished.wait(wait):
                    raise WorkerBusy(busy_message(previous.label))
            self._count += 1
            submission = self._submitted = Submission(self._count, run, label)
        shutil.rmtree(self.scratch / str(submission.number - 1), ignore_errors=True)
        thread = threading.Thread(target=self._work, args=(submission,), name=f"framepack-run-{submission.number}", daemon=True)
        thread.start()
        return submission

    def stop(self) -> bool:
        """Ask the current run to end after its current step; False if nothing is running."""
        submission = self._submitted
        if submission is None or submission.finished.is_set():
            return False
        submission.stop()
        return True

    def close(self) -> None:
        """Stop any run and delete the section snapshots (the outputs folder is left alone)."""
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _work(self, submission: Submission) -> None:
        def emit(event) -> None:
            if isinstance(event, SectionDone):
                event = replace(event, video=self._snapshot(submission, event))
            submission.events.put(event)

        try:
            submission.run.execute(self.session, emit)
        finally:
            submission.finished.set()
            submission.events.put(_DONE)

    def _snapshot(self, submission: Submission, event: SectionDone) -> Path:
        """A private copy of the video so far.

        The run rewrites its in-progress file after every section and renames it at the end,
        possibly before the page has read it; the copy stays put until the next run.
        """
        folder = self.scratch / str(submission.number)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"section-{event.section + 1}.mp4"
        # A copy, not a hard link: a link would follow the file if it were ever rewritten in place.
        # It costs little next to a section's sampling.
        shutil.copyfile(event.video, target)
        return target
