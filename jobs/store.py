"""The queue, kept in SQLite in the outputs folder: every process (page, `queue run`, the Ray head)
reads and writes the same file, so it is the single source of truth and survives any crash.

A job row holds the whole request as flat settings (Request.settings() names, pictures as paths
of copies kept under the outputs folder), its place in the queue, its status and progress, and
the name of the run it writes (claimed once, so a retry or a resume writes the same files).

Statuses: queued -> running -> finished | stopped | failed; a running job whose lease ran out (its
process died, froze or lost its machine; see jobs/leases.py) goes back to queued, as does one
interrupted by Ctrl+C. Claiming is one SQLite transaction, so two processes never take one job.

Nothing is written to disk until the first job is added: a refused `queue add` leaves no folder.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from framepack_core.events import ENDED, Status
from framepack_core.run.record import settings_problem

from .leases import LEASE_SECONDS, gone_here, owner_id

log = logging.getLogger(__name__)
DB_NAME = "queue.sqlite3"


class StoreError(ValueError):
    """The queue's file cannot be used (not a database, damaged, read-only, locked too long): one sentence."""

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
    owner TEXT,                      -- the lease's holder, host:pid:start (the Ray head for Ray jobs)
    lease_until REAL,                -- the lease's end unless renewed (time.time())
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
    lease_until: float | None
    worker: str
    attempts: int
    finishes: int
    cancel: bool
    created: float
    updated: float

    @property
    def prompt(self) -> str:
        return str(self.settings.get("prompt") or "")

    def summary(self) -> dict:
        return {"id": self.id, "status": self.status, "label": self.label, "prompt": self.prompt,
                "progress": round(self.progress, 4), "message": self.message, "video": self.video,
                "run_name": self.run_name, "attempts": self.attempts, "finishes": self.finishes}


def this_owner() -> str:
    return owner_id()


class JobStore:
    def __init__(self, outputs: str | os.PathLike):
        self.outputs = Path(outputs)
        self.path = self.outputs / DB_NAME
        self._ready = False

    @contextmanager
    def _connect(self, create: bool = False):
        """One short connection per operation: safe from any thread, and no lock held between calls. Any
        SQLite error (the file damaged, truncated, read-only, not a database) is one StoreError sentence."""
        try:
            with self._open(create) as db:
                yield db
        except sqlite3.Error as error:
            raise StoreError(f"The queue's file {str(self.path)!r} cannot be used ({error}); move it aside to start "
                             "an empty queue, or give another --outputs folder.") from None

    @contextmanager
    def _open(self, create: bool):
        if not self._ready and not self.path.exists():
            if not create:  # nothing queued yet: read an empty queue, write nothing
                db = sqlite3.connect(":memory:")
                db.row_factory = sqlite3.Row
                db.executescript(_SCHEMA)
                try:
                    yield db
                finally:
                    db.close()
                return
            self.outputs.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers (other tabs, `queue list`) never block the runner
            db.execute("PRAGMA synchronous=NORMAL")
            if not self._ready:
                _create_or_upgrade(db)
                self._ready = True
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self):
        with self._connect(create=True) as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # --- reading ---------------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """The jobs in queue order; a row that is not a job this version can run (its settings not a JSON
        object of the settings' types, a column of the wrong type) is passed over, with one notice."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY position, id").fetchall()
        return [job for job in map(_job, rows) if job is not None]

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
    def claim(self, owner: str | None = None, lease: float = LEASE_SECONDS) -> Job | None:
        """The first queued job, leased to `owner` for `lease` seconds, atomically: expired leases are
        taken back and the job marked in one transaction, so two runners never share one."""
        with self._transaction() as db:
            now = time.time()
            _take_back_expired(db, now)
            while True:
                row = db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY position, id LIMIT 1").fetchone()
                if row is None:
                    return None
                if _job(row) is not None:
                    break
                # A row no runner can read: failed, with its reason, instead of failing every runner that claims it.
                db.execute("UPDATE jobs SET status = 'failed', message = ?, updated = ? WHERE id = ?",
                           ("its settings in the queue cannot be read", now, row["id"]))
            db.execute("UPDATE jobs SET status = 'running', owner = ?, lease_until = ?, attempts = attempts + 1, "
                       "cancel = 0, message = '', updated = ? WHERE id = ?",
                       (owner or this_owner(), now + lease, now, row["id"]))
        return self.get(row["id"])

    def renew(self, job_id: int, owner: str, lease: float = LEASE_SECONDS) -> bool:
        """Extend `owner`'s lease on a running job; False when it holds it no more (taken back, given away)."""
        with self._transaction() as db:
            return db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND owner = ? AND status = 'running'",
                              (time.time() + lease, job_id, owner)).rowcount == 1

    def set_run_name(self, job_id: int, name: str) -> None:
        self._update(job_id, run_name=name)

    def set_worker(self, job_id: int, worker: str) -> None:
        self._update(job_id, worker=worker)

    def report(self, job_id: int, progress: float, sections_done: int, owner: str | None = None) -> bool:
        """Progress of a running job (by its lease's holder, when `owner` is given); answers whether
        someone asked it to stop."""
        with self._connect(create=True) as db:
            db.execute("UPDATE jobs SET progress = ?, sections_done = ?, updated = ? WHERE id = ?"
                       + _HELD, (progress, sections_done, time.time(), job_id, owner, owner))
            return bool(db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])

    def cancel_requested(self, job_id: int) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(self, job_id: int, status: str, message: str = "", video: str | None = None,
               owner: str | None = None, sections_done: int | None = None) -> bool:
        """The job's end. With `owner`, only while that owner holds its lease (else nothing changes: the
        job was given to another runner, whose result counts); whether it was written. `sections_done`:
        what the run's files hold at its end (its record's count), which progress reports may lag
        (a section written after the last report); None keeps the last reported count."""
        assert status in ENDED
        finished = ", progress = 1, finishes = finishes + 1" if status == Status.FINISHED else ""
        with self._transaction() as db:
            return db.execute("UPDATE jobs SET status = ?, message = ?, video = ?, owner = NULL, lease_until = NULL, "
                              "cancel = 0, sections_done = coalesce(?, sections_done), updated = ?" + finished
                              + " WHERE id = ?" + _HELD,
                              (status, message, video, sections_done, time.time(), job_id, owner, owner)).rowcount == 1

    def requeue(self, job_id: int, message: str = "", owner: str | None = None,
                sections_done: int | None = None) -> bool:
        """Back to the queue, keeping its run name: the next attempt resumes into the same files.
        `sections_done` as for `finish`."""
        with self._transaction() as db:
            return db.execute("UPDATE jobs SET status = 'queued', owner = NULL, lease_until = NULL, cancel = 0, "
                              "message = ?, sections_done = coalesce(?, sections_done), updated = ? WHERE id = ?"
                              + _HELD, (message, sections_done, time.time(), job_id, owner, owner)).rowcount == 1

    def recover(self) -> list[int]:
        """Running jobs whose lease ran out, or whose owner on this machine is gone (killed, crashed),
        go back to the queue; their ids. `claim` does this too, in its own transaction."""
        with self._transaction() as db:
            return _take_back_expired(db, time.time())

    def _update(self, job_id: int, **values) -> None:
        names = ", ".join(f"{name} = ?" for name in values)
        with self._transaction() as db:
            db.execute(f"UPDATE jobs SET {names}, updated = ? WHERE id = ?", (*values.values(), time.time(), job_id))


# With `owner` given, a write happens only while that owner holds the job's lease.
_HELD = " AND (? IS NULL OR owner = ?)"


def _take_back_expired(db: sqlite3.Connection, now: float) -> list[int]:
    back = []
    for row in db.execute("SELECT id, owner, lease_until FROM jobs WHERE status = 'running'").fetchall():
        if (row["lease_until"] or 0) < now or gone_here(row["owner"]):
            db.execute("UPDATE jobs SET status = 'queued', owner = NULL, lease_until = NULL, cancel = 0, "
                       "message = 'interrupted; resumes', updated = ? WHERE id = ?", (now, row["id"]))
            back.append(row["id"])
    return back


def _create_or_upgrade(db: sqlite3.Connection) -> None:
    """The table, or the lease column added to a queue made before leases (its running jobs, which
    hold no lease, go back to the queue on the next claim)."""
    db.executescript(_SCHEMA)
    if "lease_until" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
        try:
            db.execute("ALTER TABLE jobs ADD COLUMN lease_until REAL")
        except sqlite3.OperationalError:
            pass  # another process added it just now


_TYPES = {"id": int, "position": float, "status": str, "label": str, "run_name": (str, type(None)), "progress": float,
          "sections_done": int, "message": str, "video": (str, type(None)), "owner": (str, type(None)),
          "lease_until": (float, type(None)), "worker": str, "attempts": int, "finishes": int, "cancel": int,
          "created": float, "updated": float}
_noticed: set[tuple] = set()  # (id, updated) of rows passed over: each told once


def _job(row: sqlite3.Row) -> Job | None:
    """The row as a Job, or None (with one notice) when it is not one: another program wrote the file, or it
    was edited by hand. SQLite keeps any value in any column, so each is checked."""
    values = dict(row)
    problem = _row_problem(values)
    if problem is not None:
        key = (values.get("id"), values.get("updated"))
        if key not in _noticed:
            _noticed.add(key)
            log.warning("queue: job %s is passed over: %s.", values.get("id"), problem)
        return None
    values["cancel"] = bool(values["cancel"])
    return Job(**values)


def _row_problem(values: dict) -> str | None:
    if set(values) != set(_TYPES) | {"settings"}:
        return "its columns are not the queue's"
    for name, types in _TYPES.items():
        value = values[name]
        if isinstance(value, int) and not isinstance(value, bool) and float in (types if isinstance(types, tuple)
                                                                                 else (types,)):
            value = values[name] = float(value)  # SQLite hands back 2.0 as 2
        if not isinstance(value, types) or (isinstance(value, float) and not math.isfinite(value)):
            return f"its {name} is {value!r}"[:200]
    try:
        values["settings"] = json.loads(values["settings"]) if isinstance(values["settings"], str) else None
    except (ValueError, RecursionError):
        return "its settings are not JSON"
    settings = values["settings"]
    problem = settings_problem(settings)
    finishing = isinstance(settings, dict) and isinstance(settings.get("finishing"), dict)  # jobs/finishing_jobs.py
    if problem is None and not finishing and not isinstance(settings.get("image"), str):
        return "it names no picture"
    if problem is None and not isinstance(settings.get("end_image"), (str, type(None))):
        return "its end picture is not a file name"
    return problem
