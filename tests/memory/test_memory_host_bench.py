"""bench/cpu/host_memory.py at a small width: the same code path as the full-size run, in a minute."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_host_memory_bench_small(tmp_path):
    done = subprocess.run([sys.executable, "bench/cpu/host_memory.py", "--heads", "2", "--blocks", "4,12",
                           "--ram-budget", "0.07", "--dir", str(tmp_path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bit_identical"] and result["max_abs_diff"] == 0.0
    assert result["file_size_ratio"] > 1.5 and result["anon_rss_growth_ratio"] <= 1.15
    largest = max(result["sizes"], key=lambda s: s["blocks"])
    assert largest["blocks_streamed"] == 12 and 0 < largest["blocks_pinned"] < 12  # some from pinned, some from disk
    assert largest["host_weight_bytes"] <= result["ram_budget_bytes"]
    assert list(tmp_path.iterdir()) == []  # the model files are deleted
