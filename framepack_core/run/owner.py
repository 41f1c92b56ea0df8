"""Which process is making a run, and whether it still lives: what keeps a record from saying
"running" after its process was killed.

A run's record names its owner while it runs: the process id, the process's start time (so a
reused pid is not mistaken for it) and the host. psutil answers on Linux, Windows and macOS alike;
no signal is ever sent. Another host's process cannot be seen from here: it counts as unknown.
"""
from __future__ import annotations

import os
import socket

import psutil

# How far a live process's start time may seem to move: one rule for a run's owner and a queue job's lease
# (jobs/leases.py). On Linux psutil's create_time is /proc/stat's btime (whole seconds, derived from the wall
# clock) plus the start since boot, so a clock step of a few ms across a second's edge moves every process's
# start by 1 s; with a tight comparison a live owner would look gone, its run be marked failed and its scratch
# files removed under it. A reused pid starts far later than its first owner did (that owner's whole life,
# then the pid space's wrap), so this slack confuses no two processes.
START_SLACK = 5.0


def this_process() -> dict:
    """The owner entry of a record made by this process."""
    return {"pid": os.getpid(), "started": round(psutil.Process().create_time(), 3), "host": socket.gethostname()}


def owner_alive(owner: dict | None) -> bool | None:
    """True: the owner still runs; False: it is gone (ended, killed, or its pid now belongs to another
    process); None: cannot tell (no owner recorded, or another host)."""
    if not isinstance(owner, dict) or "pid" not in owner:
        return None
    if owner.get("host") != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(owner["pid"]))
        if abs(process.create_time() - float(owner.get("started", 0))) > START_SLACK:
            return False  # the pid was reused by a later process
        return process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped: gone all the same
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError, ValueError, TypeError):
        return None


def owner_words(owner) -> str:
    owner = owner if isinstance(owner, dict) else {}
    return f"process {owner.get('pid')} on {owner.get('host')}"
