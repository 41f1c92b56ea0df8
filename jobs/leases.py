"""Who runs a queue job, and for how long: leases instead of pids.

A running job holds a lease: its owner's id (host, pid and that process's start time) and an
expiry time. The owner renews it every RENEW_EVERY seconds from a small thread (LeaseKeeper), so a
model load of several minutes keeps it too. A lease that ran out means its owner is gone (killed,
frozen, its machine lost): the job goes back to the queue, and any machine may take it.

On the owner's own machine, a dead owner is recognised at once, through psutil: its pid no longer
exists, is a zombie, or belongs to a process started at another time (the pid was reused). That
check sends no signal (on Windows `os.kill(pid, 0)` would send CTRL+C) and never judges another host.
"""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import psutil

from framepack_core.run.owner import START_SLACK  # one slack for runs and leases: see there

LEASE_SECONDS = 60.0  # how long a lease lasts unrenewed: several missed renewals before a job is given away
RENEW_EVERY = 10.0


def owner_id(pid: int | None = None) -> str:
    """`host:pid:start`, unique to one process on one machine across pid reuse."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_started(pid):.2f}"


def gone_here(owner: str) -> bool:
    """Whether `owner` was a process of this machine that no longer runs. False for other hosts'
    owners and for owners this cannot judge (their lease decides)."""
    host, _, rest = (owner or "").partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or not started:
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(process.create_time() - float(started)) > START_SLACK
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, ValueError):
        return False


def _started(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


class LeaseKeeper:
    """Renews the leases of the jobs this process runs, every `every` seconds, on a daemon thread.

    `renew(job_id) -> bool` is the store's renewal for this owner; a job whose renewal fails was
    given to someone else meanwhile: `lost(job_id)` says so, and its runner stops without writing.
    """

    def __init__(self, renew: Callable[[int], bool], every: float = RENEW_EVERY):
        self._renew = renew
        self.every = every
        self._held: set[int] = set()
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: int) -> None:
        with self._lock:
            self._held.add(job_id)
            self._lost.discard(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="framepack-leases", daemon=True)
                self._thread.start()

    def release(self, job_id: int) -> None:
        with self._lock:
            self._held.discard(job_id)

    def lost(self, job_id: int) -> bool:
        return job_id in self._lost

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.every)
            with self._lock:
                held = sorted(self._held)
                if not held:
                    self._thread = None
                    return
            for job_id in held:
                try:
                    kept = self._renew(job_id)
                except Exception:  # noqa: BLE001 - a busy or unreachable store: try again next time
                    continue
                if not kept:
                    with self._lock:
                        self._lost.add(job_id)
                        self._held.discard(job_id)
