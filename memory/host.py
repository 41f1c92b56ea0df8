"""Host memory: the process's own size, and handing freed heap back to the operating system.

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


def anonymous_resident_bytes(pid: int | None = None) -> int | None:
    """A process's own resident memory (this one's, or `pid`'s): its heap, not the pages of mapped weight files,
    which the OS page cache holds and drops as it likes. Pinned buffers are not in it either: CUDA's
    page-locked memory is shared memory on Linux (it shows as RssShmem), so callers add the pinned bytes
    the allocator reports (memory/usage.py) to have the process's whole RAM. Through psutil, on every system: on Linux
    resident less shared pages (= `RssAnon`), elsewhere the unique set size (private pages), else the
    resident size. None where psutil cannot tell."""
    import psutil

    try:
        process = psutil.Process(pid)
        info = process.memory_info()
    except (psutil.Error, OSError):
        return None
    shared = getattr(info, "shared", None)  # Linux: file-backed and shared-memory pages
    if shared is not None:
        return info.rss - shared
    try:
        return process.memory_full_info().uss
    except (psutil.Error, OSError, AttributeError):
        return info.rss
