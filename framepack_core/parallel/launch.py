"""Rank 0's side of one video on several devices: start the other ranks, run the pipeline with them,
and end in one sentence when one of them is lost.

Rank 0 is the process that asked (the command line, the page, a queue worker): its Run writes the
previews, the MP4, the latents and the one record, exactly as with one device, so a run stopped,
failed or killed here resumes as any other. The other ranks are fresh processes (worker.py) that
end with the run.
"""
from __future__ import annotations

import logging
import queue
from dataclasses import replace

import torch

from ..failures import Cancelled, RankLost
from ..engine.work import Made, Work
from .group import RUN_TIMEOUT, SharedStop, end_group, free_port, start_group
from .guidance import layout_for, parallel
from .worker import WorkerJob, worker_main

log = logging.getLogger(__name__)
JOIN_SECONDS = 5  # how long a finished run waits for the other ranks to leave before ending them


def rank_devices(first: torch.device, world: int) -> list[str]:
    """One device per rank: on CUDA consecutive GPUs from rank 0's, on a CPU the CPU for all."""
    if first.type != "cuda":
        return ["cpu"] * world
    start = first.index or 0
    if start + world > torch.cuda.device_count():
        raise ValueError(f"{world} GPUs were asked for, but this computer has {torch.cuda.device_count()} "
                         f"from GPU {start} on; lower --gpus.")
    return [f"cuda:{start + rank}" for rank in range(world)]


def make_video_parallel(work: Work, models, manager, config, session_type) -> Made:
    """generation.make_video on `work.request.speed.gpus` processes; this one is rank 0. `config` and
    `session_type` (session.Session, passed in: the session imports this module) make the other ranks'
    sessions."""
    import torch.multiprocessing as mp

    from ..engine.generation import VideoPipeline

    world = work.request.speed.gpus
    device = torch.device(getattr(manager, "device", None) or config.device or "cpu")
    devices = rank_devices(device, world)
    threads = max(1, torch.get_num_threads() // world) if device.type == "cpu" else torch.get_num_threads()
    port, context = free_port(), mp.get_context("spawn")
    messages = context.Queue()
    workers = [context.Process(target=worker_main, daemon=True, name=f"framepack-rank{rank}", args=(
        WorkerJob(rank, world, port, devices[rank], threads, work.request, work.origin, config, session_type),
        messages)) for rank in range(1, world)]
    for process in workers:
        process.start()
    threads_before = torch.get_num_threads()
    try:
        _wait_until_ready(workers, messages, work.cancel)
        torch.set_num_threads(threads)
        ranks = start_group(0, world, port, torch.device(devices[0]), layout_for(work.request))
        try:
            shared = replace(work, cancel=SharedStop(work.cancel, ranks))
            with parallel(models.transformer, ranks):
                return VideoPipeline(shared, models, manager)()
        except Exception as error:
            lost = _lost_rank(workers, messages, wait=2.0)
            if lost is None and isinstance(error, torch.distributed.DistError):  # all alive, one stuck
                lost = (f"The run's {world} processes stopped answering each other (no answer within "
                        f"{RUN_TIMEOUT.total_seconds():g} s).")
            if lost is not None:
                raise RankLost(lost) from error
            raise
        finally:
            end_group()
    finally:
        torch.set_num_threads(threads_before)
        _end(workers)


def _wait_until_ready(workers, messages, cancel) -> None:
    """Until every other rank has its models loaded (minutes for real weights): a rank failing or dying
    meanwhile ends the run at once, and so does Stop."""
    waiting = set(range(1, len(workers) + 1))
    while waiting:
        if cancel.is_set():
            raise Cancelled()
        lost = _lost_rank(workers, messages, wait=0.2, ready=waiting)
        if lost is not None:
            raise RankLost(lost)


def _lost_rank(workers, messages, wait: float, ready: set | None = None) -> str | None:
    """One sentence for a rank that failed or died, or None when all are still there. A rank's
    (rank, None, None) message, that it is ready, is taken off `ready`."""
    world = len(workers) + 1
    try:
        rank, message, detail = messages.get(timeout=wait)
        if message is None:
            if ready is not None:
                ready.discard(rank)
        else:
            log.info("rank %d failed:\n%s", rank, detail)
            return f"The process for device {rank + 1} of {world} failed: {message}"
    except queue.Empty:
        pass
    for rank, process in enumerate(workers, 1):
        if process.exitcode not in (None, 0):
            return f"The process for device {rank + 1} of {world} ended unexpectedly (exit code {process.exitcode})."
    return None


def _end(workers) -> None:
    for process in workers:
        process.join(timeout=JOIN_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
