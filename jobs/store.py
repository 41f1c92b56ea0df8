"""The queue, kept in SQLite in the outputs folder: every process (page, `queue run`, the Ray head)
reads and writes the same file, so it is the single source of truth and survives any crash.

A job row holds the whole request as flat settings (Request.settings() names, pictures as paths
of copies kept under the outputs folder), its place in the queue, its status and progress, and
the name of the run it writes (claimed once, so a retry or a resume writes the same files).

Statuses: queued -> running -> finished | stopped | failed; a running job whose process died goes
back to queued (`recover`), as does one interrupted by Ctrl+C.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "queue.sqlite3"
STATUSES = ("queued", "running", "finished", "stopped", "failed")
DONE = ("finished", "stopped", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    settings TEXT NOT NULL,          -- JSON: Request.from_fields names (image/end_image: copies' paths)
    label TEXT NOT NULL DEFAULT '',  -- the picture's original name, for lists
    run_name TEXT,                   -- the run's files in the outputs folder (NAME.mp4, ...), once claimed
    progress REAL NOT NULL DEFAULT 0,
    sections_done INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    video TEXT,                      -- the finished video's file name
    owner TEXT,                      -- host:pid of the process running it (the Ray head for Ray jobs)
    worker TEXT NOT NULL DEFAULT '', -- where it runs: this process, or a Ray worker's pid and node
    attempts INTEGER NOT NULL DEFAULT 0,   -- times it was started (a resume counts)
    finishes INTEGER NOT NULL DEFAULT 0,   -- times it ran to its end: 1 at most, unless retried by hand
    cancel INTEGER NOT NULL DEFAULT 0,     -- asked to stop (by any process)
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Job:
    id: int
    position: float
    status: str
    settings: dict
    label: str
    run_name: str | None
    progress: float
    sections_done: int
    message: str
    video: str | None
    owner: str | None
    worker: str
    attempts: int
    finishes: int
    cancel: bool
    created: float
    updated: float

    def summary(self) -> dict:
        return {"id": self.id, "status": self.status, "label": self.label, "prompt": self.settings.get("prompt", ""),
                "progress": round(self.progress, 4), "message": self.message, "video": self.video,
                "run_name": self.run_name, "attempts": self.attempts, "finishes": self.finishes}


def this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobStore:
    def __init__(self, outputs: str | os.PathLike):
        self.outputs = Path(outputs)
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.path = self.outputs / DB_NAME
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self):
        # One short connection per operation: safe from any thread, and no lock held between calls.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers (other tabs, `queue list`) never block the runner
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self):
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # --- reading ---------------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        with self._connect() as db:
            return [_job(row) for row in db.execute("SELECT * FROM jobs ORDER BY position, id")]

    def get(self, job_id: int) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def version(self) -> tuple:
        """Changes whenever any job changes: the page redraws its list only then."""
        with self._connect() as db:
            return tuple(db.execute("SELECT count(*), max(updated) FROM jobs").fetchone())

    # --- adding and arranging ----------------------------------------------------------------------------
    def add(self, settings: dict, label: str = "") -> int:
        now = time.time()
        with self._transaction() as db:
            last = db.execute("SELECT max(position) FROM jobs").fetchone()[0]
            cursor = db.execute("INSERT INTO jobs (position, settings, label, created, updated) VALUES (?, ?, ?, ?, ?)",
                                ((last or 0) + 1, json.dumps(settings), label, now, now))
            return cursor.lastrowid

    def move(self, job_id: int, offset: int) -> None:
        """Swap places with the neighbour `offset` (-1 up, +1 down) in queue order."""
        with self._transaction() as db:
            order = [(r["id"], r["position"]) for r in db.execute("SELECT id, position FROM jobs ORDER BY position, id")]
            ids = [i for i, _ in order]
            if job_id not in ids:
                return
            i = ids.index(job_id)
            j = max(0, min(len(ids) - 1, i + offset))
            if i == j:
                return
            now = time.time()
            db.execute("UPDATE jobs SET position = ?, updated = ? WHERE id = ?", (order[j][1], now, order[i][0]))
            db.execute("UPDATE jobs SET position = ?, updated = ? WHERE id = ?", (order[i][1], now, order[j][0]))

    def cancel(self, job_id: int) -> None:
        """A queued job is stopped at once; a running one is asked to stop (its runner polls `cancel`)."""
        with self._transaction() as db:
            now = time.time()
            db.execute("UPDATE jobs SET status = 'stopped', message = 'cancelled', updated = ? "
                       "WHERE id = ? AND status = 'queued'", (now, job_id))
            db.execute("UPDATE jobs SET cancel = 1, updated = ? WHERE id = ? AND status = 'running'", (now, job_id))

    def retry(self, job_id: int) -> None:
        """A stopped or failed job back to the queue; it resumes from its last finished section if it can."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET status = 'queued', message = '', cancel = 0, updated = ? "
                       "WHERE id = ? AND status IN ('stopped', 'failed', 'finished')", (time.time(), job_id))

    def delete(self, job_id: int) -> None:
        """A job that is not running leaves the queue (its videos stay in the outputs folder)."""
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ? AND status != 'running'", (job_id,))

    def clear_finished(self) -> int:
        with self._transaction() as db:
            return db.execute("DELETE FROM jobs WHERE status = 'finished'").rowcount

    # --- running -------------------------------------------------------------------------------------------
    def claim(self, owner: str | None = None) -> Job | None:
        """The first queued job, marked running for `owner`, atomically (two runners never share one)."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY position, id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', owner = ?, attempts = attempts + 1, cancel = 0, "
                       "message = '', updated = ? WHERE id = ?", (owner or this_owner(), time.time(), row["id"]))
        return self.get(row["id"])

    def set_run_name(self, job_id: int, name: str) -> None:
        self._update(job_id, run_name=name)

    def set_worker(self, job_id: int, worker: str) -> None:
        self._update(job_id, worker=worker)

    def report(self, job_id: int, progress: float, sections_done: int) -> bool:
        """Progress of a running job; answers whether someone asked it to stop."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET progress = ?, sections_done = ?, updated = ? WHERE id = ?",
                       (progress, sections_done, time.time(), job_id))
            return bool(db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])

    def cancel_requested(self, job_id: int) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(self, job_id: int, status: str, message: str = "", video: str | None = None) -> None:
        assert status in DONE
        finished = ", progress = 1, finishes = finishes + 1" if status == "finished" else ""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET status = ?, message = ?, video = ?, owner = NULL, cancel = 0, updated = ?"
                       + finished + " WHERE id = ?",
                       (status, message, video, time.time(), job_id))

    def requeue(self, job_id: int, message: str = "") -> None:
        """Back to the queue, keeping its run name: the next attempt resumes into the same files."""
        self._update(job_id, status="queued", owner=None, cancel=0, message=message)

    def recover(self, alive=None) -> list[int]:
        """Running jobs whose process is gone (killed, crashed, power cut) go back to the queue.

        Only jobs owned by this machine are judged (a pid means nothing on another host); `alive(owner)`
        may be given to judge others (the Ray head knows its own workers).
        """
        host = socket.gethostname()
        alive = alive or _process_alive_here
        back = []
        with self._transaction() as db:
            for row in db.execute("SELECT id, owner FROM jobs WHERE status = 'running'").fetchall():
                owner = row["owner"] or ""
                if owner.rpartition(":")[0] == host and not alive(owner):
                    db.execute("UPDATE jobs SET status = 'queued', owner = NULL, cancel = 0, "
                               "message = 'interrupted; resumes', updated = ? WHERE id = ?", (time.time(), row["id"]))
                    back.append(row["id"])
        return back

    def _update(self, job_id: int, **values) -> None:
        names = ", ".join(f"{name} = ?" for name in values)
        with self._transaction() as db:
            db.execute(f"UPDATE jobs SET {names}, updated = ? WHERE id = ?", (*values.values(), time.time(), job_id))


def _process_alive_here(owner: str) -> bool:
    pid = int(owner.rpartition(":")[2] or 0)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is as dead as can be.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["settings"] = json.loads(values["settings"])
    values["cancel"] = bool(values["cancel"])
    return Job(**values)
