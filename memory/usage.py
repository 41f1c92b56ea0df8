"""What each stage of a piece of work cost: seconds, peak device memory, bytes streamed, the
process's own memory, pinned host memory, and what the plan said.

    meter = UsageMeter()
    meter.watch(*device_usage(device))          # peaks and bytes moved, once the device is known
    meter.begin("decoding", section=2, planned=lambda: plan_bytes)     # ends the stage before it
    ...
    meter.close()
    meter.stages   # [{"stage": "decoding", "section": 2, "seconds": ..., "vram_peak_allocated": ...}, ...]

A stage lasts until the next begins (or `close`), so a sequence of stages covers the whole
work and nothing between two of them goes unaccounted. Each figure is what its source can say,
None where it can say nothing (a CPU has no device peaks; a torch without CUDA keeps no pinned
memory statistics). Generic: it knows nothing of what the stages are.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

import torch

from .host import anonymous_resident_bytes

Counter = Callable[[], "int | None"]


class DeviceMemory(Protocol):
    """A device's peak memory since the last reset: what `torch.cuda` or a device's ledger can say."""

    def reset_peaks(self) -> None: ...

    def peaks(self) -> tuple[int | None, int | None]: ...  # (allocated, reserved)


class CudaMemory:
    """Peaks from torch's CUDA caching allocator: every tensor of the process on that GPU."""

    def __init__(self, device: torch.device | int | None = None):
        self.device = device

    def reset_peaks(self) -> None:
        torch.cuda.synchronize(self.device)  # work queued by the stage before counts there, not here
        torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> tuple[int | None, int | None]:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device), torch.cuda.max_memory_reserved(self.device)


class LedgerMemory:
    """Peaks from a memory.device.Device's own ledger (`current_bytes`, `peak_bytes`): the buffers it
    handed out, which is all a simulated device can say. It reserves nothing beyond them (None).

    The ledger's peak is the whole run's to others: it is lowered for the stage and raised back after."""

    def __init__(self, device):
        self.device = device
        self._outer = 0

    def reset_peaks(self) -> None:
        self._outer = max(self._outer, self.device.peak_bytes)
        self.device.peak_bytes = self.device.current_bytes

    def peaks(self) -> tuple[int | None, int | None]:
        peak = self.device.peak_bytes
        self._outer = max(self._outer, peak)
        self.device.peak_bytes = self._outer
        return peak, None


def device_usage(device) -> tuple[DeviceMemory | None, Counter | None]:
    """(its peaks, its count of bytes moved to it) for a memory.device.Device; (None, None) without one."""
    if device is None:
        return None, None
    memory = CudaMemory(device.torch_device) if device.kind == "cuda" else LedgerMemory(device)
    return memory, lambda: device.bytes_moved


def reset_pinned_peak() -> None:
    reset = getattr(torch.cuda, "reset_peak_host_memory_stats", None)
    if reset is not None and torch.cuda.is_available():
        try:
            reset()
        except (RuntimeError, AttributeError):  # a build without CUDA has the name but not the statistics
            pass


def pinned_host_peak() -> int | None:
    """The most pinned host memory torch's host allocator held (blocks in use and cached) since the last
    reset; None where this build keeps no such statistics (no CUDA)."""
    stats = _host_stats()
    return stats.get("allocated_bytes.peak", stats.get("allocated_bytes.current")) if stats else None


def _host_stats() -> dict:
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None or not torch.cuda.is_available():
        return {}
    try:
        return dict(stats())
    except (RuntimeError, AttributeError):
        return {}


@dataclass
class StageUsage:
    stage: str
    section: int | None
    seconds: float
    vram_peak_allocated: int | None
    vram_peak_reserved: int | None
    bytes_streamed: int | None
    rss_anon_peak: int | None
    pinned_bytes: int | None
    planned_bytes: int | None


class UsageMeter:
    def __init__(self, memory: DeviceMemory | None = None, streamed: Counter | None = None,
                 rss: Counter = anonymous_resident_bytes, pinned: Counter = pinned_host_peak,
                 reset_pinned: Callable[[], None] = reset_pinned_peak, clock: Callable[[], float] = time.monotonic,
                 poll_seconds: float | None = 0.25):
        """`rss`: the process's own resident bytes now (sampled: at each stage's ends, at each `sample()`
        and every `poll_seconds` on a thread, None for none). `pinned`: pinned host bytes at their peak
        since `reset_pinned()`. `memory` and `streamed` may come later (`watch`)."""
        self.memory, self.streamed = memory, streamed
        self.rss, self.pinned, self.reset_pinned, self.clock = rss, pinned, reset_pinned, clock
        self.poll_seconds = poll_seconds
        self.records: list[StageUsage] = []
        self._open: dict | None = None
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()

    def watch(self, memory: DeviceMemory | None = None, streamed: Counter | None = None) -> None:
        """Sources known only once the work has its device (from the next stage on)."""
        self.memory = memory or self.memory
        self.streamed = streamed or self.streamed

    def begin(self, stage: str, section: int | None = None, planned: Counter | None = None) -> None:
        """End the stage under way (if any) and start `stage`. `planned()` is read as the stage ends."""
        self.end()
        if self.memory is not None:
            self.memory.reset_peaks()
        self.reset_pinned()
        with self._lock:
            self._open = {"stage": stage, "section": section, "planned": planned, "started": self.clock(),
                          "memory": self.memory, "streamed": self.streamed,
                          "moved": self.streamed() if self.streamed else None, "rss": None}
        self.sample()
        self._start_polling()

    def sample(self) -> None:
        """Read the process's resident memory now (a stage's peak is the largest reading)."""
        value = self.rss() if self.rss is not None else None
        with self._lock:
            if self._open is not None and value is not None:
                self._open["rss"] = max(self._open["rss"] or 0, value)

    def end(self) -> StageUsage | None:
        """Close the stage under way; its figures, or None when none was open."""
        if self._open is None:
            return None
        self.sample()
        with self._lock:
            stage, self._open = self._open, None
        allocated, reserved = stage["memory"].peaks() if stage["memory"] is not None else (None, None)
        moved = stage["streamed"]() - stage["moved"] if stage["moved"] is not None else None
        usage = StageUsage(stage["stage"], stage["section"], round(self.clock() - stage["started"], 6), allocated,
                           reserved, moved, stage["rss"], self.pinned() if self.pinned else None,
                           stage["planned"]() if stage["planned"] else None)
        self.records.append(usage)
        return usage

    def close(self) -> list[dict]:
        """End the last stage and stop sampling; every stage's figures."""
        self.end()
        self._closed.set()
        return self.stages

    @property
    def stages(self) -> list[dict]:
        return [asdict(record) for record in self.records]

    def _start_polling(self) -> None:
        if self.poll_seconds is None or self._poller is not None or self.rss is None:
            return

        def poll() -> None:
            while not self._closed.wait(self.poll_seconds):
                self.sample()

        self._poller = threading.Thread(target=poll, name="usage-meter", daemon=True)
        self._poller.start()
