"""`queue run --ray`: the queue's jobs on a Ray cluster, one long-lived worker per GPU.

Each worker is a Ray actor that loads the models once (its Session) and runs jobs one after
another through the same run path as everywhere else (jobs.running.run_job), writing into the
outputs folder that the queue owns. Only this process, the head, touches the SQLite queue: the
workers report progress when asked and return each job's result.

Across machines the outputs folder must be the same path on every node (shared storage, e.g.
NFS), as must the app's code; see README. A worker that dies mid-job (its process killed, its
node lost) is replaced, and the job goes back to the queue and resumes from its last finished
section on whichever worker takes it next.

Imported only for `--ray`: nothing else in the app imports ray.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import ray

from framepack_core.session_config import SessionConfig

from .executor import apply_result, prepare
from .running import JobResult, run_job
from .store import JobStore, this_owner

REPO = str(Path(__file__).resolve().parent.parent)  # the workers import the app from the same place


def init_options() -> dict:
    """ray.init's options: the workers find the app's code and the same model cache as this process."""
    env = {"PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for name in ("FRAMEPACK_CACHE", "FRAMEPACK_MODELS_DIR", "HF_HOME", "HF_HUB_OFFLINE"):
        if name in os.environ:
            env[name] = os.environ[name]
    return {"runtime_env": {"env_vars": env}, "include_dashboard": False, "log_to_driver": False,
            "configure_logging": False}


class JobWorker:
    """One worker: a Session kept for its lifetime, one job at a time. Threaded (max_concurrency=2),
    so that `progress` and `stop` are answered while `run` is busy."""

    def __init__(self, config: SessionConfig | None = None):
        from framepack_core.session import Session

        self.session = Session(config)
        self._progress = (0.0, 0)
        self._cancel = threading.Event()  # the user cancelled the job: it ends as stopped
        self._interrupt = threading.Event()  # the queue is stopping: the job goes back to the queue

    def where(self) -> str:
        return f"pid {os.getpid()} on {ray.util.get_node_ip_address()}"

    def pid(self) -> int:
        return os.getpid()

    def run(self, settings: dict, run_name: str, outputs: str, resuming: bool) -> dict:
        self._cancel.clear()
        self._interrupt.clear()
        self._progress = (0.0, 0)

        def on_progress(fraction: float, sections: int) -> bool:
            self._progress = (fraction, sections)
            return self._cancel.is_set()

        result = run_job(settings, run_name, Path(outputs), lambda run, emit: run.execute(self.session, emit),
                         lambda event: None, on_progress,
                         self._interrupt.is_set, resuming=resuming)
        return result.as_dict()

    def progress(self) -> tuple[float, int]:
        return self._progress

    def stop(self, cancel: bool) -> None:
        (self._cancel if cancel else self._interrupt).set()


class RayExecutor:
    def __init__(self, store: JobStore, address: str | None = "local", cpu_workers: int = 1,
                 config: SessionConfig | None = None, poll: float = 0.5):
        """`config`: the flags' session configuration, which every worker's Session is built from."""
        self.store = store
        self.address = address
        self.cpu_workers = cpu_workers
        self.config = config or SessionConfig()
        self.poll = poll
        self.interrupt = threading.Event()
        self.owner = this_owner()
        self.started_ray = False
        self.actor_class = None

    def _connect(self) -> None:
        if ray.is_initialized():
            return  # tests (and embedding programs) start their own cluster
        address = None if self.address in (None, "local") else self.address
        ray.init(address=address, **init_options())
        self.started_ray = True

    def _new_worker(self):
        return self.actor_class.remote(self.config)

    def run_until_empty(self) -> int:
        self._connect()
        try:
            return self._work()
        finally:
            if self.started_ray:
                ray.shutdown()

    def _work(self) -> int:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = gpus or max(1, self.cpu_workers)
        # One worker per GPU; on a cluster without GPUs (CI), CPU workers on the same code.
        self.actor_class = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
                                      max_concurrency=2, max_restarts=0)(JobWorker)
        free = [self._new_worker() for _ in range(count)]
        running: dict = {}  # result ref -> (worker, job)
        self.store.recover()
        done = 0
        while True:
            while free and not self.interrupt.is_set():
                job = self.store.claim(self.owner)
                if job is None:
                    break
                worker = free.pop()
                name, resuming = prepare(self.store, job)
                try:
                    self.store.set_worker(job.id, ray.get(worker.where.remote(), timeout=120))
                except (ray.exceptions.RayError, TimeoutError):
                    pass
                ref = worker.run.remote(job.settings, name, str(self.store.outputs), resuming)
                running[ref] = (worker, job)
            if not running:
                return done
            ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll)
            for ref in ready:
                worker, job = running.pop(ref)
                try:
                    result = JobResult(**ray.get(ref))
                except ray.exceptions.RayActorError:
                    # The worker died mid-job: the job goes back to the queue (resuming from its last
                    # section) and a fresh worker takes the dead one's place.
                    self.store.requeue(job.id, "worker lost; resumes")
                    free.append(self._new_worker())
                    continue
                except ray.exceptions.RayError as error:
                    result = JobResult("failed", str(error).splitlines()[0])
                apply_result(self.store, job, result)
                done += result.status == "finished"
                free.append(worker)
            self._watch(running)

    def _watch(self, running: dict) -> None:
        """Progress of each running job into the queue; a cancel (from the page or another process) or
        Ctrl+C passed on to its worker."""
        for worker, job in running.values():
            try:
                fraction, sections = ray.get(worker.progress.remote(), timeout=5)
            except (ray.exceptions.RayError, TimeoutError):
                continue  # a dead worker shows as its result's error
            if self.store.report(job.id, fraction, sections):
                worker.stop.remote(True)
            elif self.interrupt.is_set():
                worker.stop.remote(False)

