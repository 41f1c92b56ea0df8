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

_SAME_START = 0.5  # seconds: psutil's start times of one process agree far closer than this


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
        if abs(process.create_time() - float(owner.get("started", 0))) > _SAME_START:
            return False  # the pid was reused by a later process
        return process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped: gone all the same
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError, ValueError, TypeError):
        return None


def owner_words(owner: dict) -> str:
    return f"process {owner.get('pid')} on {owner.get('host')}"
