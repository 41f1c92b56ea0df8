"""`queue run --ray` on a local cluster of two CPU workers (what CI has): the jobs finish with the
frames of the local run, a worker killed mid-job loses nothing, a cancel stops a worker's job and
keeps its video so far, and each job's progress is printed. The one Ray test module: Ray starts
slowly, so one cluster serves it all (the tests before the first that takes `cluster` need none)."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest
from tests.support.queue_helpers import TINY, assert_each_video_is_its_uninterrupted_run

from jobs.intake import add_job
from jobs.store import JobStore

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


def run_args(**values) -> Namespace:
    return Namespace(**{"ray": "local", "workers": 2, "models_dir": None, "vram_budget": None} | values)


def test_queue_run_ray_from_a_fresh_process_starts_its_own_cluster(tiny_models, picture, tmp_path):
    """What a user does on a fresh machine: `queue add`, then `queue run --ray` with no Ray running
    (the test starts none; Ray's files go to a folder of the test's own, so no other Ray is touched).
    The head Ray starts must outlive the call that starts it: the job's video is its uninterrupted run."""
    import shutil
    import tempfile

    outputs = tmp_path / "outputs"
    ray_files = tempfile.mkdtemp(prefix="fpray-")  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_files}
    app = [sys.executable, "app.py", "queue"]
    try:
        added = subprocess.run([*app, "add", "--outputs", str(outputs), "--image", str(picture),
                                "--prompt", "a red balloon", "--seed", "3", "--model", "tiny", "--resolution", "128",
                                "--seconds", "1", "--steps", "2"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert added.returncode == 0, added.stderr
        done = subprocess.run([*app, "run", "--ray", "--workers", "1", "--outputs", str(outputs)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=400)  # a hang guard, not a limit
    finally:
        shutil.rmtree(ray_files, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ran 1 job; 0 queued" in done.stderr
    jobs = JobStore(outputs).jobs()
    assert [(j.status, j.finishes) for j in jobs] == [("finished", 1)]
    assert_each_video_is_its_uninterrupted_run(jobs, outputs, tiny_models, tmp_path)


def test_an_unreachable_address_ends_in_one_line(tmp_path):
    """Ray itself retries a dead address for minutes, printing warnings; the address is knocked on first."""
    outputs = tmp_path / "outputs"
    done = subprocess.run([sys.executable, "app.py", "queue", "run", "--ray", "127.0.0.1:1", "--outputs", str(outputs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # a hang guard, not a limit
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: No Ray cluster answers at 127.0.0.1:1 (connection refused); is `ray start --head` running there, "
        "and is the port open?"]
    assert not outputs.exists()


def test_a_failing_start_is_one_line_and_plain_ray_ignores_ray_address(tmp_path, monkeypatch, capsys):
    from ui.queue_cli import _run

    seen = []

    def failing_init(address=None, **options):
        seen.append((address, os.environ.get("RAY_ADDRESS")))
        raise RuntimeError("Failed to start the raylet: port 6380 is in use.\n  File ... (a traceback)")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", failing_init)
    monkeypatch.setenv("RAY_ADDRESS", "10.9.8.7:6379")
    assert _run(JobStore(tmp_path), run_args()) == 2
    assert seen == [(None, None)]  # a new local cluster, RAY_ADDRESS out of its way
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: RAY_ADDRESS=10.9.8.7:6379 ignored: --ray alone starts a local cluster (--ray auto joins the one "
        "RAY_ADDRESS names)",
        "error: a local Ray cluster could not be used: Failed to start the raylet: port 6380 is in use."]


@pytest.fixture(scope="module")
def cluster():
    from jobs.ray_pool import init_options

    ray.init(num_cpus=2, **init_options())
    yield
    ray.shutdown()


def test_six_jobs_on_two_workers_one_killed_mid_job(cluster, tiny_models, picture, tmp_path):
    from jobs.ray_pool import RayExecutor

    outputs = tmp_path / "outputs"
    store = JobStore(outputs)
    for n in range(6):  # the third has two sections: its worker is killed after the first
        add_job(store, {"image": str(picture), "prompt": "a red balloon", "seed": n % 2} | TINY
                | {"seconds": 2 if n == 2 else 1})
    killed = []

    def kill_the_third_jobs_worker():
        while not killed:
            job = store.get(3)
            if job.status == "running" and job.sections_done >= 1 and job.worker.startswith("pid "):
                pid = int(job.worker.split()[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_third_jobs_worker, daemon=True)
    killer.start()
    executor = RayExecutor(store, cpu_workers=2, poll=0.2)
    assert executor.run_until_empty() == 6
    killer.join(timeout=1)
    assert killed and killed[0] != os.getpid()

    jobs = store.jobs()
    assert [j.status for j in jobs] == ["finished"] * 6
    assert [j.finishes for j in jobs] == [1] * 6
    assert [j.attempts for j in jobs] == [1, 1, 2, 1, 1, 1]
    assert len({j.worker for j in jobs}) >= 2  # both workers took jobs (and the replacement too)
    assert sorted(p.name for p in outputs.glob("*.mp4")) == sorted(j.video for j in jobs)
    # Ray gives an actor of one CPU OMP_NUM_THREADS=1 (ray._private.utils.set_omp_num_threads_if_unset): the
    # references are made on one thread too, not on this process's thread count.
    assert_each_video_is_its_uninterrupted_run(jobs, outputs, tiny_models, tmp_path, threads=1)


def test_progress_lines_and_a_cancel_on_a_worker_that_keeps_the_video_so_far(cluster, picture, tmp_path, capsys):
    """`queue run --ray` prints each job's progress as a local run does; a job cancelled (from another
    process's store) while a worker runs it stops after the current step, with its video so far."""
    from tests.support.mp4info import mp4_info

    from ui.queue_cli import _run

    outputs = tmp_path / "outputs"
    store = JobStore(outputs)
    whole = add_job(store, {"image": str(picture), "prompt": "a red balloon", "seed": 1} | TINY | {"steps": 1})
    cut = add_job(store, {"image": str(picture), "prompt": "a blue kite", "seed": 2} | TINY | {"seconds": 4, "steps": 3})

    def cancel_after_the_first_section():
        while (job := store.get(cut)).status != "stopped":
            if job.status == "running" and job.sections_done >= 1:
                JobStore(outputs).cancel(cut)
                return
            time.sleep(0.02)

    canceller = threading.Thread(target=cancel_after_the_first_section, daemon=True)
    canceller.start()
    assert _run(store, run_args()) == 0
    canceller.join(timeout=1)
    err = capsys.readouterr().err
    done, stopped = store.get(whole), store.get(cut)
    assert (done.status, done.finishes) == ("finished", 1)
    assert f"job {whole}: {done.label} - a red balloon" in err
    assert f"job {whole}: section 1/1 done: {mp4_info(outputs / done.video)[1].shape[0]} frames" in err
    assert (stopped.status, stopped.message, stopped.finishes) == ("stopped", "cancelled", 0)
    made = re.findall(rf"job {cut}: section (\d+)/(\d+) done: (\d+) frames", err)
    assert 1 <= len(made) == stopped.sections_done < int(made[-1][1])  # stopped before its last section
    assert mp4_info(outputs / stopped.video)[1].shape[0] == int(made[-1][2])  # the video so far, kept
    record = json.loads((outputs / f"{stopped.run_name}.json").read_text())  # the run's own account: the truth
    assert (record["status"], record["sections"], record["frames"]) == ("stopped", stopped.sections_done, int(made[-1][2]))
