"""Host memory: handing freed heap back to the operating system.

Decoding a section allocates a few hundred MB of short-lived buffers. glibc keeps freed heap
for reuse, so the process's resident size wanders up and down by that much from section to
section although nothing leaks. Trimming after each section keeps it flat.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim with
        return None


def release_free_host_memory() -> bool:
    """Return freed heap pages to the OS where the C library can; True if it did."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_heap_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; True if the C library took it.

    Every run starts new threads (the run itself, the video writer, ...), and glibc gives threads
    arenas of their own that keep their freed heap; the resident size then wanders by tens of MB
    from run to run. A few shared arenas keep a session of many runs flat.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, count))


def anonymous_resident_bytes() -> int | None:
    """The process's own resident memory (`RssAnon`): heap and pinned buffers, not the pages of mapped
    weight files, which the OS page cache holds and drops as it likes. None where /proc has no such line."""
    return proc_bytes("/proc/self/status", "RssAnon")


def proc_bytes(path: str, field: str) -> int | None:
    """A `Field:  N kB` line of a /proc file (Linux), in bytes; None where there is none."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
