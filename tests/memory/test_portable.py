"""Windows and macOS: memory figures and process checks come from psutil, never from /proc alone.

The fallbacks are tried here on Linux with /proc hidden from every open() and psutil answering as it
does on Windows (no `shared` pages, a unique set size instead)."""
import builtins
import subprocess
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from memory import available_ram_bytes, default_ram_budget
from memory.host import anonymous_resident_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_proc(monkeypatch):
    """/proc as on Windows and macOS: not there."""
    real_open = builtins.open

    def guarded(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


WindowsMemory = namedtuple("WindowsMemory", "rss vms num_page_faults peak_wset wset private")
FullMemory = namedtuple("FullMemory", "rss vms uss")
VirtualMemory = namedtuple("VirtualMemory", "total available percent used free")


class WindowsProcess:
    """psutil.Process as psutil builds it on Windows: memory_info has no `shared` field."""

    def __init__(self, pid=None):
        pass

    def memory_info(self):
        return WindowsMemory(900 * 2**20, 2 * 2**30, 10, 950 * 2**20, 900 * 2**20, 700 * 2**20)

    def memory_full_info(self):
        return FullMemory(900 * 2**20, 2 * 2**30, 640 * 2**20)


def test_ram_figures_with_proc_hidden(no_proc, monkeypatch):
    monkeypatch.setattr(psutil, "virtual_memory", lambda: VirtualMemory(16 * 2**30, 9 * 2**30, 44.0, 7 * 2**30,
                                                                        5 * 2**30))
    monkeypatch.setattr(psutil, "Process", WindowsProcess)
    assert available_ram_bytes() == 9 * 2**30
    assert default_ram_budget() == 7 * 2**30  # less the 2 GiB reserve: the budget does something
    assert anonymous_resident_bytes() == 640 * 2**20  # the private pages, not the 900 MiB resident


def test_available_ram_without_proc_or_psutil_falls_back_to_the_c_library(no_proc, monkeypatch):
    def unreadable():
        raise psutil.Error("psutil cannot read the system's memory here")

    monkeypatch.setattr(psutil, "virtual_memory", unreadable)
    available = available_ram_bytes()
    assert isinstance(available, int) and available > 0


def test_linux_figures_are_psutils_and_match_proc():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    anon = int(fields["RssAnon"].split()[0]) * 1024
    assert abs(anonymous_resident_bytes() - anon) < 64 * 2**20  # read a moment apart
    assert available_ram_bytes() == pytest.approx(psutil.virtual_memory().available, rel=0.2)


def test_no_linux_only_path_outside_the_queue():
    """No /proc, os.kill(pid, 0), fcntl or SIGKILL in the app's code (jobs/ is the queue's own)."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    offenders = []
    for name in files:
        if name.startswith(("tests/", "jobs/", "bench/")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8")
        for needle in ('"/proc', "'/proc", "os.kill(", "import fcntl", "SIGKILL", "import resource"):
            if needle in text:
                offenders.append(f"{name}: {needle}")
    assert offenders == []
    assert "psutil==" in (ROOT / "requirements.txt").read_text()
