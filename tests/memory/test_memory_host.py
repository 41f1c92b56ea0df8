"""Freed host heap goes back to the OS, so resident memory follows what is really in use."""
import sys

import psutil
import pytest

from memory import release_free_host_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_returns_freed_heap():
    process = psutil.Process()
    # Mid-sized blocks (below mmap's threshold) on the heap, each followed by a small survivor, so
    # that once they are freed the holes are not at the heap's top and glibc keeps their pages.
    blocks, survivors = [], []
    for _ in range(4000):  # about 250 MiB
        blocks.append(bytearray(64 * 1024))
        survivors.append(bytearray(600))
    del blocks
    before = process.memory_info().rss
    assert release_free_host_memory() is True
    after = process.memory_info().rss
    assert before - after > 100 * 2**20
