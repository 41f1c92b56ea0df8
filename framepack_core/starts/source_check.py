"""Whether a video named in a run's saved latents is still the one the run started from.

A resumed extension, branch or bridge copies frames from the videos its latents file names. That file
lies in the outputs folder, where anyone who can write there can edit it: a path changed to another
video would splice that video's frames (any file the app can read) into the output the page serves.
So the latents also keep each source's SHA-256 when the run starts, and a resume reads a source only
when its bytes still hash to it; a source that changed, or another file put in its place, gets one
sentence. Latents written before the digests (no digest kept) are read as before.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


def source_digest(path: str | Path) -> str:
    """The SHA-256 of the file's bytes (hex); computed once per file version, as the latents are saved after
    every section."""
    path = Path(path)
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def trusted_source(path, digest, what: str) -> Path:
    """`path` from a latents file, when it is still the video the run read (`digest`: the SHA-256 kept when
    the run started; None for older latents, which kept none); else ValueError in one sentence."""
    if not isinstance(path, str) or not Path(path).is_file():
        raise ValueError(f"{what[0].upper()}{what[1:]}, {str(path)[:200]!r}, is missing.")
    if digest is not None and (not isinstance(digest, str) or source_digest(path) != digest):
        raise ValueError(f"{what[0].upper()}{what[1:]}, {path!r}, is not the file this run started from (its "
                         "contents differ), so the run cannot be resumed; continue the source again instead.")
    return Path(path)
