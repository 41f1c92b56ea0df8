"""The RAM budget: how much of the machine's memory the app may take, and its share for weights.

Default: the memory available now (free plus what the OS can reclaim from its caches, as psutil
reads it on Linux, Windows and macOS alike) less a reserve for the rest of the system. Of the
budget, a fixed estimate goes to the process itself (Python, torch, the CUDA context, libraries,
the page, one run's working set); the rest may hold weights in the process's own memory (pinned
copies of streamed blocks, the staging ring). Mapped weights take none of it: they are the OS page cache's.
"""
from __future__ import annotations

import os

from .budget import GiB

RAM_RESERVE_BYTES = 2 * GiB  # left to the OS and other programs
PROCESS_BYTES = 3 * GiB  # the process without weights: interpreter, torch + CUDA context, libraries, a run's buffers


def available_ram_bytes() -> int | None:
    """Memory available to a new program now (psutil; on Linux MemAvailable). Where psutil cannot read it, the
    free pages the C library reports (POSIX); None where unknown."""
    import psutil

    try:
        return int(psutil.virtual_memory().available)
    except (psutil.Error, OSError, RuntimeError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def default_ram_budget() -> int | None:
    available = available_ram_bytes()
    return None if available is None else max(available - RAM_RESERVE_BYTES, 0)


def weight_ram_budget(ram_budget_bytes: int | None) -> int | None:
    """The budget's share for weights in the process's own memory (None: no limit)."""
    return None if ram_budget_bytes is None else max(ram_budget_bytes - PROCESS_BYTES, 0)
