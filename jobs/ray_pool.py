"""`queue run --ray`: the queue's jobs on a Ray cluster, one long-lived worker per GPU.

Each worker is a Ray actor that loads the models once (its Session) and runs jobs one after
another through the same run path as everywhere else (jobs.running.run_job), writing into the
outputs folder that the queue owns. Only this process, the head, touches the SQLite queue: the
workers report progress when asked and return each job's result.

Across machines the outputs folder must be the same path on every node (shared storage, e.g.
NFS), as must the app's code; see README. A worker that dies mid-job (its process killed, its
node lost) is replaced, and the job goes back to the queue and resumes from its last finished
section on whichever worker takes it next. The head holds each running job's lease (jobs/leases.py)
and renews it; if the head itself dies, the leases run out and the jobs go back to the queue.

Connecting says what went wrong in one line (RayUnavailable) and never waits long: an address is
knocked on before Ray is asked to join it (Ray itself retries a dead address for minutes).

Imported only for `--ray`: nothing else in the app imports ray.
"""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import ray

from framepack_core.events import Preview, Status
from framepack_core.engine.session_config import SessionConfig

from .executor import apply_result, prepare
from .leases import LeaseKeeper
from .ray_gpus import gpus_asked, node_gpus, refusal, worker_options
from .running import JobResult, run_job
from .store import JobStore, this_owner

REPO = str(Path(__file__).resolve().parent.parent)  # the workers import the app from the same place
KNOCK_SECONDS = 5.0  # an address that accepts no connection in this long has no Ray cluster
START_SECONDS = 20.0  # ray.init that neither connects nor fails in this long is given up


class RayUnavailable(RuntimeError):
    """Ray could not be started or reached; the message is one sentence for the user."""


def connect(address: str | None, say: Callable[[str], None]) -> bool:
    """Join or start the cluster `--ray` names: "local" (a new one here), "auto" (the one running here,
    or RAY_ADDRESS) or HOST:PORT / ray://HOST:PORT. Whether this process started Ray (and so stops it)."""
    if ray.is_initialized():
        return False  # tests (and embedding programs) start their own cluster
    target = None if address in (None, "local") else address
    if target is None and os.environ.get("RAY_ADDRESS"):
        # ray.init() would join RAY_ADDRESS instead of starting the local cluster that plain --ray promises.
        say(f"note: RAY_ADDRESS={os.environ.pop('RAY_ADDRESS')} ignored: --ray alone starts a local cluster "
            "(--ray auto joins the one RAY_ADDRESS names)")
    if target not in (None, "auto"):
        knock(target)
    where = "a local Ray cluster" if target is None else f"Ray at {target}"
    if target is None:
        # A local cluster is started in the calling thread, never a helper thread: Ray starts its head
        # processes with PR_SET_PDEATHSIG, which Linux ties to the starting *thread*, so a head started
        # in a thread that ends is killed with it ("Failed to connect to GCS within 60 seconds").
        try:
            ray.init(**init_options())
        except Exception as error:  # noqa: BLE001 - whatever Ray raises becomes the one line below
            raise RayUnavailable(f"{where} could not be used: {first_line(error)}") from None
        return True
    # Joining starts no processes here, so it may wait in a thread that is given up after START_SECONDS
    # (Ray itself retries an address that answers but is not Ray for minutes).
    outcome: dict = {}

    def join() -> None:
        try:
            ray.init(address=target, **init_options())
            outcome["ok"] = True
        except Exception as error:  # noqa: BLE001 - whatever Ray raises becomes the one line below
            outcome["error"] = error

    thread = threading.Thread(target=join, name="framepack-ray-join", daemon=True)
    thread.start()
    thread.join(START_SECONDS)
    if thread.is_alive():
        raise RayUnavailable(f"{where} did not answer within {START_SECONDS:.0f} s.")
    if "error" in outcome:
        raise RayUnavailable(f"{where} could not be used: {first_line(outcome['error'])}")
    return True


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def knock(address: str) -> None:
    """Raise RayUnavailable unless something accepts a connection at HOST:PORT (or ray://HOST:PORT)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray {address}: give HOST:PORT (e.g. 10.0.0.5:6379), auto, or nothing for a local cluster.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=KNOCK_SECONDS).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayUnavailable(f"No Ray cluster answers at {address} ({reason.lower()}); is `ray start --head` "
                             "running there, and is the port open?") from None


def init_options() -> dict:
    """ray.init's options: the workers find the app's code and the same model cache as this process."""
    env = {"PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    # MKL_CBWR: the workers compute as reproducibly as this process (framepack_core/reproducible.py).
    for name in ("FRAMEPACK_CACHE", "FRAMEPACK_MODELS_DIR", "HF_HOME", "HF_HUB_OFFLINE", "MKL_CBWR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return {"runtime_env": {"env_vars": env}, "include_dashboard": False, "log_to_driver": False,
            "configure_logging": False}


class JobWorker:
    """One worker: a Session kept for its lifetime, one job at a time. Threaded (max_concurrency=2),
    so that `progress` and `stop` are answered while `run` is busy."""

    def __init__(self, config: SessionConfig | None = None):
        from framepack_core.engine.session import Session

        self.session = Session(config)
        self._progress = (0.0, 0)
        self._events: list = []  # since the head last asked (previews left out: pictures are large)
        self._events_lock = threading.Lock()  # `run` appends while `progress` hands the list over
        self._cancel = threading.Event()  # the user cancelled the job: it ends as stopped
        self._interrupt = threading.Event()  # the queue is stopping: the job goes back to the queue
        self._run_name = ""  # the job running now: a stop meant for an earlier one is ignored

    def where(self) -> str:
        return f"pid {os.getpid()} on {ray.util.get_node_ip_address()}"

    def pid(self) -> int:
        return os.getpid()

    def run(self, settings: dict, run_name: str, outputs: str, resuming: bool) -> dict:
        self._run_name = run_name
        self._cancel.clear()
        self._interrupt.clear()
        self._progress = (0.0, 0)
        with self._events_lock:
            self._events = []

        def keep(event) -> None:
            if not isinstance(event, Preview):
                with self._events_lock:  # else an event appended to a list already handed over is lost
                    self._events.append(event)

        def on_progress(fraction: float, sections: int) -> bool:
            self._progress = (fraction, sections)
            return self._cancel.is_set()

        result = run_job(settings, run_name, Path(outputs), lambda run, emit: run.execute(self.session, emit),
                         keep, on_progress,
                         self._interrupt.is_set, resuming=resuming)
        return result.as_dict()

    def progress(self) -> tuple[float, int, list]:
        """(fraction, sections done, the events since the last call)."""
        with self._events_lock:
            events, self._events = self._events, []
        return (*self._progress, events)

    def stop(self, cancel: bool, run_name: str) -> None:
        """Stop the run `run_name` (a threaded actor may answer a stop after the next job has begun)."""
        if run_name == self._run_name:
            (self._cancel if cancel else self._interrupt).set()


class RayExecutor:
    def __init__(self, store: JobStore, address: str | None = "local", cpu_workers: int = 1,
                 config: SessionConfig | None = None, poll: float = 0.5,
                 on_event: Callable | None = None, on_job: Callable | None = None,
                 say: Callable[[str], None] | None = None):
        """`config`: the flags' session configuration, which every worker's Session is built from.
        `on_event(job, event)` and `on_job(job)` as for LocalExecutor (events come with each poll,
        previews left out); `say(line)` for notices about connecting."""
        self.store = store
        self.address = address
        self.cpu_workers = cpu_workers
        self.config = config or SessionConfig()
        self.poll = poll
        self.interrupt = threading.Event()
        self.owner = this_owner()
        self.leases = LeaseKeeper(lambda job_id: self.store.renew(job_id, self.owner))
        self.on_event = on_event or (lambda job, event: None)
        self.on_job = on_job or (lambda job: None)
        self.say = say or (lambda line: None)
        self.started_ray = False
        self.actor_class = None
        self.cluster_gpus = 0
        self.sized: set = set()  # workers made for one job on several GPUs, ended after it

    def _new_worker(self, gpus: int = 1):
        if gpus == 1:
            return self.actor_class.remote(self.config)
        worker = self.actor_class.options(**worker_options(gpus, self.cluster_gpus)).remote(self.config)
        self.sized.add(worker)
        return worker

    def _worker_for(self, job, free: list):
        """The worker for `job`: a free one, or for a job on N > 1 GPUs its own worker holding N GPUs of one
        machine (Ray places it once they are free: the free one-GPU workers are ended now, and those that
        finish a job meanwhile, see _finished). None: no machine has N GPUs; the job failed in one sentence."""
        asked = gpus_asked(job.settings)
        if asked == 1 or not self.cluster_gpus:
            return free.pop()
        refused = refusal(asked, node_gpus(ray.nodes()))
        if refused:
            apply_result(self.store, job, JobResult(Status.FAILED, refused), self.owner)
            self.leases.release(job.id)
            return None
        while free:
            ray.kill(free.pop())
        return self._new_worker(asked)

    def _finished(self, worker, free: list, pool: int, alive: bool = True) -> None:
        """A worker whose job ended: back to the free ones, unless it died, was one job's own, or such a
        job waits for GPUs; then the pool is filled up to `pool` free workers again once no such job is left."""
        if not alive or worker in self.sized or self.sized:
            self.sized.discard(worker)
            ray.kill(worker)
        else:
            free.append(worker)
        if not self.sized:
            free.extend(self._new_worker() for _ in range(pool - len(free)))

    def run_until_empty(self) -> int:
        """Raises RayUnavailable (one line) when the cluster cannot be reached or started."""
        self.started_ray = connect(self.address, self.say)
        try:
            return self._work()
        finally:
            if self.started_ray:
                ray.shutdown()

    def _work(self) -> int:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = gpus or max(1, self.cpu_workers)
        # One worker per GPU; on a cluster without GPUs (CI), CPU workers on the same code.
        self.cluster_gpus = gpus
        self.actor_class = ray.remote(**worker_options(1, gpus), max_concurrency=2, max_restarts=0)(JobWorker)
        free = [self._new_worker() for _ in range(count)]
        running: dict = {}  # result ref -> (worker, job)
        self.store.recover()
        done = 0
        while True:
            while free and not self.interrupt.is_set():
                job = self.store.claim(self.owner)
                if job is None:
                    break
                self.leases.hold(job.id)
                self.on_job(job)
                worker = self._worker_for(job, free)
                if worker is None:
                    continue
                name, resuming = prepare(self.store, job)
                job = replace(job, run_name=name)
                try:  # a worker of several GPUs may wait for them: where it runs is not asked then
                    if worker not in self.sized:
                        self.store.set_worker(job.id, ray.get(worker.where.remote(), timeout=120))
                except (ray.exceptions.RayError, TimeoutError):
                    pass
                ref = worker.run.remote(job.settings, name, str(self.store.outputs), resuming)
                running[ref] = (worker, job)
            if not running:
                for worker in free:  # their GPUs back to the cluster (it may outlive this queue run)
                    ray.kill(worker)
                return done
            ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll)
            for ref in ready:
                worker, job = running.pop(ref)
                pool = count - sum(other not in self.sized for other, _ in running.values())  # free ones wanted
                try:
                    result = JobResult(**ray.get(ref))
                except ray.exceptions.RayActorError:
                    # The worker died mid-job: the job goes back to the queue (resuming from its last
                    # section) and a fresh worker takes the dead one's place.
                    self.store.requeue(job.id, "worker lost; resumes", self.owner)
                    self.leases.release(job.id)
                    self._finished(worker, free, pool, alive=False)
                    continue
                except ray.exceptions.RayError as error:
                    result = JobResult(Status.FAILED, str(error).splitlines()[0])
                self._drain(worker, job)
                apply_result(self.store, job, result, self.owner)
                self.leases.release(job.id)
                done += result.status == Status.FINISHED
                self._finished(worker, free, pool)
            self._watch(running)

    def _watch(self, running: dict) -> None:
        """Progress of each running job into the queue; a cancel (from the page or another process) or
        Ctrl+C passed on to its worker."""
        for worker, job in running.values():
            progress = self._drain(worker, job)
            if progress is None:
                continue  # a dead worker shows as its result's error
            if self.store.report(job.id, *progress, self.owner):
                worker.stop.remote(True, job.run_name)
            elif self.interrupt.is_set() or self.leases.lost(job.id):
                worker.stop.remote(False, job.run_name)  # a lost lease: the job was given to another runner

    def _drain(self, worker, job) -> tuple[float, int] | None:
        """The worker's progress, its events since the last call passed to on_event."""
        try:
            fraction, sections, events = ray.get(worker.progress.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return None
        for event in events:
            self.on_event(job, event)
        return fraction, sections

