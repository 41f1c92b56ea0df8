"""The GPU session (bench/gpu/gpu_session.sh and its steps) on a CPU: each finding of issue 25 fixed, and the
whole session run to its verdict with the tiny models."""
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from bench.gpu import full_set, gpu_verdict
from bench.support.sharded_fill import Pattern
from bench.support.synthetic import SMALL_CONFIG, full_size_transformer
from memory import cap

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30
ORDER = ["machine", "build", "run_1s_6gb", "run_1s_free", "run_1s_4gb", "gpu_report", "kernels", "run_5s_6gb",
         "alloc_plain", "finishing"]


def session(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OUT": str(tmp_path / "out"), "FRAMEPACK_CACHE": str(tmp_path / "cache"),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "bench/gpu/gpu_session.sh"], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=1500)


def results(tmp_path) -> dict:
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    return {entry["step"]: entry for entry in map(json.loads, lines)}


def test_the_tiny_session_runs_every_step_in_order_to_its_verdict(tmp_path):
    done = session(tmp_path, GPU_SESSION_TINY="1")
    assert done.returncode == 0, done.stderr[-2000:]
    steps = results(tmp_path)
    assert list(steps) == ORDER
    assert not any(s.get("skipped") or s.get("timed_out") for s in steps.values()), steps
    machine = steps["machine"]["result"]
    assert machine["alloc_conf"] == "expandable_segments:True" and machine["sage_visible_to_app_runs"] is False
    for name in ("run_1s_6gb", "run_1s_free", "run_1s_4gb", "run_5s_6gb", "alloc_plain"):
        run = steps[name]["result"]
        assert steps[name]["rc"] == 0 and run["status"] == "finished" and run["model"] == "tiny", (name, run)
        assert run["frames"] > 0 and run["resolution"] == 128 and not run["traceback"]
    assert steps["gpu_report"]["rc"] == 2  # it needs CUDA, and says so at once
    kernels = steps["kernels"]["result"]
    assert kernels["tiny"] and kernels["combinations"]["sdpa"]["seconds_per_step"] > 0
    assert_kernels_tiny_ran_every_combination((tmp_path / "out" / "kernels.stdout").read_text())
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["run_1s_6gb"]["finished"] is True and verdict["cap_4gib"]["status"] == "finished"
    # No card to read here: the criteria say "not known", never "true".
    assert verdict["run_1s_6gb"]["card_within_budget"] is None and verdict["cap_4gib"]["ok"] is None
    assert verdict["whole_run_6gb_over_free"] > 0


def assert_kernels_tiny_ran_every_combination(stdout: str) -> None:
    """`bench/gpu/kernels.py --tiny --json` (the session's kernels step, run once here for both claims): each
    combination runs or is skipped with the app's reason, and a JSON line comes as each one ends."""
    lines = [json.loads(line) for line in stdout.strip().splitlines() if line.startswith("{")]
    partial, final = lines[:-1], lines[-1]
    assert len(partial) == 9 and all(p["partial"] for p in partial)  # one line per combination, as it ends
    assert list(partial[0]["combinations"]) == ["sdpa"]
    combos = final["combinations"]
    assert not any("failed" in c for c in combos.values()), combos  # the stale Speed failed every one
    assert combos["sdpa"]["seconds_per_step"] > 0 and combos["fp8storage"]["psnr_db"] > 20
    assert "torch.compile is used on a CUDA GPU only" in combos["sdpa+compile"]["skipped"]


def test_a_stand_in_transformer_has_norm_scales_near_one_and_weights_near_zero():
    model = full_size_transformer(dtype=torch.float32, **SMALL_CONFIG)
    qk = [p for n, p in model.named_parameters() if n.endswith(("norm_q.weight", "norm_k.weight"))]
    assert qk and all(abs(p.mean().item() - 1) < 0.05 for p in qk)
    linear = model.transformer_blocks[0].attn.to_q.weight
    assert abs(linear.mean().item()) < 0.01 and 0.01 < linear.std().item() < 0.03
    scale = Pattern().like("norm.weight", torch.empty(64, device="meta", dtype=torch.bfloat16), 0)
    assert abs(scale.float().mean().item() - 1) < 0.05  # the full-size stand-in's files alike


def test_each_app_run_gets_a_cache_folder_of_its_own(tmp_path):
    first, second = full_set.run_env(tmp_path / "a" / "cache"), full_set.run_env(tmp_path / "b" / "cache")
    assert first["FRAMEPACK_CACHE"] != second["FRAMEPACK_CACHE"]  # the prompt cache lives under it


def test_a_step_cut_by_timeout_keeps_its_peaks_and_prints_no_traceback(tmp_path, monkeypatch):
    """`timeout` sends SIGTERM to full_set.py and then to its group: two in a row."""
    monkeypatch.setattr(full_set, "app_command",
                        lambda args, output: [sys.executable, "-c", "import time; time.sleep(60)"])
    args = full_set.parse_args(["--dir", str(tmp_path / "set"), "--model", "tiny", "--timeout", "120"])
    previous = signal.signal(signal.SIGTERM, full_set._time_up)

    def terms():
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(0.05)

    timer = threading.Timer(1.0, terms)
    timer.start()
    try:
        run = full_set.run_app(args, tmp_path / "video.mp4")
    finally:
        timer.join()
        signal.signal(signal.SIGTERM, previous)
    assert run["timed_out"] is True and run["rss_samples"] > 0 and run["rss_anon_peak_bytes"] > 0
    summary = full_set.summary(args, {}, run, None)
    assert summary["status"] == "timed out" and summary["traceback"] is False


def entry(step, result, rc=0):
    return json.dumps({"step": step, "rc": rc, "seconds": 1.0, "result": result})


def test_the_verdict_needs_finished_runs_and_tells_out_of_memory_from_refusal(tmp_path):
    base = {"returncode": 0, "card_peak_over_baseline_bytes": 5 * GiB, "rss_anon_peak_bytes": 4 * GiB,
            "pinned_bytes_peak": 8 * GiB, "seconds_run": 100.0, "seconds_per_step": 2.0}
    rehearsal = {"peak_bytes": int(4.5 * GiB), "context_reserve_bytes": GiB // 2}
    lines = [
        entry("run_1s_6gb", base | {"status": "failed", "returncode": 1}),  # under budget, but it failed
        entry("run_1s_free", None, rc=137),  # killed before any JSON
        entry("run_1s_4gb", base | {"status": "failed", "returncode": 1, "out_of_memory": True, "traceback": False,
                                    "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}),
        entry("run_5s_6gb", base | {"status": "finished", "rehearsal": rehearsal}),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(lines) + "\n")
    verdict = gpu_verdict.verdict(gpu_verdict._results(str(path)))
    assert verdict["run_1s_6gb"]["card_within_budget"] is False and verdict["run_1s_6gb"]["finished"] is False
    assert verdict["whole_run_6gb_over_free"] is None and verdict["whole_run_ok"] is None  # no ratio of a cut run
    assert verdict["cap_4gib"]["ok"] is False and verdict["cap_4gib"]["refused"] is False
    five = verdict["run_5s_6gb"]
    assert five["card_within_budget"] is True and five["rehearsal_over_measured"] == 1.0
    assert five["card_beyond_rehearsal_bytes"] == GiB // 2  # the context the rehearsal reserves, measured
    assert verdict["rehearsal_within_10_percent"] is None  # run_1s_6gb has no finished figure to hold
    refusal = ("A VRAM budget of 4.00 GiB cannot run the text encoder (Llama): it needs 1002.51 MiB on the GPU, "
               "slots to stream its blocks (416.02 MiB each) and 2.70 GiB kept for activations at 640; raise the VRAM "
               "budget to at least 5.5 GB, or lower the resolution.")
    refused = base | {"status": "failed", "returncode": 1, "error": refusal, "traceback": False, "out_of_memory": False}
    assert gpu_verdict._cap(refused, 4.0)["ok"] is True


def test_the_allocator_is_told_of_expandable_segments_even_after_torch_loaded(monkeypatch):
    told = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", told.append, raising=False)
    env = {}
    assert cap.configure_allocator(env) == "expandable_segments:True"
    assert told == ["expandable_segments:True"] and env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


@pytest.mark.parametrize("keep", ["1", "0"])
def test_the_stand_in_is_kept_for_a_warm_rerun_only_when_asked(tmp_path, keep):
    stand_in = tmp_path / "set"
    stand_in.mkdir()
    (stand_in / "FULL_SET.json").write_text("{}")
    done = session(tmp_path, GPU_SESSION_STEPS="machine", GPU_SESSION_DIR=str(stand_in), GPU_SESSION_KEEP_SET=keep)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(results(tmp_path)) == ["machine"]
    assert stand_in.exists() is (keep == "1")
