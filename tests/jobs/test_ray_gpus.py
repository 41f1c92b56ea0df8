"""A queued job on several GPUs under Ray (jobs/ray_gpus.py, jobs/ray_pool.py): its worker holds its N GPUs
on one machine, and a job no machine can hold is refused in one sentence instead of waiting for ever.
On a local cluster that declares two GPUs (Ray counts them; no CUDA is needed to hold them)."""
import pytest

from jobs.ray_gpus import gpus_asked, node_gpus, refusal, worker_options
from jobs.store import JobStore

ray = pytest.importorskip("ray")

TOO_MANY = ("This job asks for 3 GPUs on one machine, but no machine of the Ray cluster has more than 2; "
            "lower its GPUs setting to 2 or fewer.")


def test_what_a_job_asks_of_ray():
    assert gpus_asked({"prompt": "x"}) == 1 and gpus_asked({"gpus": 2}) == 2
    assert worker_options(2, cluster_gpus=4) == {"num_gpus": 2, "num_cpus": 0}
    assert worker_options(2, cluster_gpus=0) == {"num_gpus": 0, "num_cpus": 1}  # CPUs only: its processes share one
    nodes = [{"Alive": True, "Resources": {"GPU": 2.0}}, {"Alive": False, "Resources": {"GPU": 8.0}}]
    assert node_gpus(nodes) == [2.0]
    assert refusal(2, [2.0, 1.0]) is None and refusal(3, [2.0, 1.0]) == TOO_MANY
    assert refusal(3, [0.0]) is None  # no GPU anywhere: the job runs its processes on a CPU


def test_a_job_on_two_gpus_holds_both_and_one_on_three_is_refused(tmp_path):
    from jobs.ray_pool import JobWorker, RayExecutor, init_options

    ray.init(num_cpus=1, num_gpus=2, **init_options())
    try:
        store = JobStore(tmp_path / "outputs")
        refused = store.add({"prompt": "a red balloon", "image": "balloon.png", "gpus": 3})
        executor = RayExecutor(store, address="local")
        assert executor.run_until_empty() == 0  # returns: nothing waits for a third GPU
        job = store.get(refused)
        assert (job.status, job.message) == ("failed", TOO_MANY)

        store.add({"prompt": "a red balloon", "image": "balloon.png", "gpus": 2})
        job = store.claim(executor.owner)
        executor.actor_class = ray.remote(**worker_options(1, 2), max_concurrency=2, max_restarts=0)(JobWorker)
        worker = executor._worker_for(job, free=[])
        assert worker in executor.sized
        ray.get(worker.pid.remote(), timeout=120)  # placed: both GPUs of the one node are its own
        assert ray.available_resources().get("GPU", 0) == 0 and ray.cluster_resources()["GPU"] == 2
    finally:
        ray.shutdown()
