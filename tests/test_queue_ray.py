"""`queue run --ray` on a local cluster of two CPU workers (what CI has): the jobs finish with the
frames of the local run, and a worker killed mid-job loses nothing. The one Ray test module: Ray
starts slowly, so one cluster serves it all."""
import os
import signal
import threading
import time

import pytest
from queue_helpers import TINY, assert_each_video_is_its_uninterrupted_run

from jobs.intake import add_job
from jobs.store import JobStore

ray = pytest.importorskip("ray")


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
    assert_each_video_is_its_uninterrupted_run(jobs, outputs, tiny_models, tmp_path)
