"""Watching a running process from outside: the whole card's used memory and the process's RssAnon.

The card's figure is what NVML counts (the CUDA context, the caching allocator's reserve and any
other allocator included), not what torch's statistics see; read through pynvml when it is
installed, else `nvidia-smi`. Both are sampled every `interval` seconds, so a spike shorter than
that can be missed. Without an NVIDIA driver the card's figures are None.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading

from memory.host import anonymous_resident_bytes

MiB = 1 << 20


def _gpu_index() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"  # an index or a UUID: nvidia-smi -i and NVML take either


def _nvml_reader():
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        index = _gpu_index()
        handle = (pynvml.nvmlDeviceGetHandleByIndex(int(index)) if index.isdigit()
                  else pynvml.nvmlDeviceGetHandleByUUID(index))
    except Exception:  # pynvml's errors have no common base but Exception; no driver: fall back
        return None
    return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)


def _smi_reader():
    if shutil.which("nvidia-smi") is None:
        return None
    command = ["nvidia-smi", "-i", _gpu_index(), "--query-gpu=memory.used", "--format=csv,noheader,nounits"]

    def read() -> int | None:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return int(done.stdout.split()[0]) * MiB if done.returncode == 0 else None
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    return read if read() is not None else None


def card_reader():
    """A function giving the card's used bytes now, or None where no NVIDIA card can be read."""
    return _nvml_reader() or _smi_reader()


def card_memory_used() -> int | None:
    reader = card_reader()
    return reader() if reader else None


class ProcessWatch:
    """`with ProcessWatch(pid) as watch: ...`, then `watch.peaks()`."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.card = card_reader()
        self.card_peak = self.rss_peak = None
        self.card_samples = self.rss_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        rss = anonymous_resident_bytes(self.pid)
        if rss is not None:
            self.rss_peak, self.rss_samples = max(rss, self.rss_peak or 0), self.rss_samples + 1
        used = self.card() if self.card else None
        if used is not None:
            self.card_peak, self.card_samples = max(used, self.card_peak or 0), self.card_samples + 1

    def peaks(self) -> dict:
        return {"card_peak_bytes": self.card_peak, "card_samples": self.card_samples,
                "rss_anon_peak_bytes": self.rss_peak, "rss_samples": self.rss_samples}
