"""bench/cpu/finishing_memory.py in its smallest mode: the same code path as the 544x704 run, in seconds."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_finishing_memory_bench_small(tmp_path):
    done = subprocess.run([sys.executable, "bench/cpu/finishing_memory.py", "--width", "160", "--height", "96",
                           "--frames", "9,45", "--part-frames", "8", "--dir", str(tmp_path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(s["frames"], s["width"], s["height"]) for s in result["sizes"]] == [(9, 320, 192), (45, 320, 192)]
    assert 0.9 <= result["heap_growth_ratio"] <= 1.1  # five times the frames, the same heap
    assert list(tmp_path.iterdir()) == []  # clips, model and results are removed
