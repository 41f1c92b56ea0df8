"""Files replaced whole: readers see the old file or the new one, never a half-written one.

A run's record (run/files.py) and its section latents (media/latents.py) are read while the run
writes them (the page, a resume, another process), and a killed or full-disk write must leave the
last good copy. Both write here, so media/ need not reach into run/ for it.
"""
from __future__ import annotations

import os
from pathlib import Path

SCRATCH_SUFFIX = ".partial"  # `.NAME.partial` beside the file; a killed writer's is swept by run/files.py


def write_atomically(path: Path, data: bytes) -> None:
    """`data` into `path` through a scratch file renamed into place (nor, after a full disk, a
    half-written scratch file left behind)."""
    tmp = path.with_name(f".{path.name}{SCRATCH_SUFFIX}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
