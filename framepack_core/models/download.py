"""The first download of a model set, as a person sees it: checked against the free disk space before it
starts, and reported while it runs (bytes done, total, speed, time left) as the loading stage's message,
which the terminal prints and the page's progress box shows.

huggingface_hub does the downloading: `snapshot_download(dry_run=True)` says which files are still
missing and their sizes; the real call reports the bytes it writes through the `tqdm_class` it is given.
An interrupted download resumes file by file: each finished file stays in the cache and is not fetched
again; the file that was cut off starts over (huggingface_hub 2.4 writes each file to a temporary name
unique to the process and deletes it on failure).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

GB = 1e9  # download sizes in decimal gigabytes, as the hub and disk tools show them
REPORT_SECONDS = 2.0  # at most one progress message this often (and one at the end)


def missing_bytes(snapshot: Callable, repo_id: str, **options) -> int | None:
    """Bytes of `repo_id`'s wanted files that are not in the cache yet; None when the hub cannot be asked
    (no connection: the download itself then says what is wrong)."""
    try:
        files = snapshot(repo_id, dry_run=True, **options)
    except (OSError, ValueError):
        return None
    return sum(f.file_size or 0 for f in files if f.will_download)


def check_free_space(needed: int, folder: Path, set_name: str) -> None:
    """Refuse, in one line, a download that would not fit where it goes (before a byte is fetched)."""
    from framepack_core.failures import ModelsUnavailableError

    free = shutil.disk_usage(_existing(folder)).free
    if needed > free:
        raise ModelsUnavailableError(
            f"The {set_name} model set needs {needed / GB:.1f} GB more in {folder}, which has {free / GB:.1f} GB "
            f"free; free {(needed - free) / GB:.1f} GB there, or set HF_HOME to a disk with room (or pass "
            "--models-dir with a copy you already have).")


def _existing(folder: Path) -> Path:
    """The folder, or the nearest parent that exists (the cache is created by the download)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


class DownloadProgress:
    """Bytes written so far against the total still missing, as one line for the loading stage."""

    def __init__(self, total: int, say: Callable[[str], None], what: str, clock: Callable[[], float] | None = None):
        self.total, self.say, self.what = total, say, what
        self.clock = clock or time.monotonic
        self.done = 0
        self.started = self.clock()
        self.reported = None  # when the last line went out

    def add(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if self.reported is None or now - self.reported >= REPORT_SECONDS or self.done >= self.total:
            self.reported = now
            self.say(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        speed = self.done / elapsed
        total = max(self.total, self.done)
        left = f", about {_duration((total - self.done) / speed)} left" if speed > 0 and total > self.done else ""
        return (f"downloading {self.what}: {self.done / GB:.2f} GB of {total / GB:.2f} GB "
                f"({100 * self.done / total if total else 100:.0f}%), {speed / 1e6:.1f} MB/s{left}")

    def bar_class(self) -> type:
        """A tqdm class for `snapshot_download(tqdm_class=...)`: draws nothing, adds the bytes written."""
        progress = self

        class ByteBar(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs.pop("name", None)
                # The bytes written to disk; not the network bar of Xet transfers (compressed, counted twice).
                self.counts_bytes = kwargs.get("unit") == "B" and not str(kwargs.get("desc", "")).startswith(
                    "Downloading bytes")
                super().__init__(*args, **(kwargs | {"disable": True}))

            def update(self, n=1):
                if self.counts_bytes and n:
                    progress.add(int(n))
                return super().update(n)

        return ByteBar


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
