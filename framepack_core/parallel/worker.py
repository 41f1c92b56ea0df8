"""A rank other than 0: the same pipeline on the same request, into a temporary folder, telling no one.

Started by launch.py in a fresh process (spawn: the same on Windows, and no CUDA state inherited).
Its own models and memory manager come from a Session like rank 0's, on its own device. What it
writes (the video so far, needed only to keep the ranks in step) goes into a folder removed at the
end. Ctrl+C reaches every process of the console: the workers leave it to rank 0, which stops the
run for all ranks at the next step.
"""
from __future__ import annotations

import signal
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerJob:
    rank: int
    world: int
    port: int
    device: str
    threads: int  # torch's CPU threads for this process
    request: object  # the validated Request
    origin: object  # how the run starts (a kind of start's origin: starts/), as rank 0 has it
    config: object  # rank 0's SessionConfig; the device is the rank's own
    session_type: type  # session.Session (given, not imported: the session imports the launcher)


def worker_main(job: WorkerJob, messages) -> None:
    """The process's body. On `messages`: (rank, None, None) once its models are loaded, and on a failure
    (rank, one line, traceback) for rank 0 to tell."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _run(job, messages)
    except BaseException as error:  # noqa: BLE001 (any failure: rank 0 names it, then this process exits)
        from ..failures import user_message

        messages.put((job.rank, user_message(error) if isinstance(error, Exception) else repr(error),
                    traceback.format_exc()))
        raise SystemExit(1) from None


def _run(job: WorkerJob, messages) -> None:
    from dataclasses import replace

    import torch

    from memory.usage import UsageMeter

    from ..engine.generation import VideoPipeline
    from ..run.lifecycle import mp4_tags
    from ..engine.work import Work
    from .group import SharedStop, end_group, start_group
    from .guidance import layout_for, parallel

    torch.set_num_threads(job.threads)
    session = job.session_type(replace(job.config, device=job.device))
    models, manager = session.prepare(job.request, lambda event: None)
    messages.put((job.rank, None, None))  # ready: rank 0 starts the group once every rank is
    ranks = start_group(job.rank, job.world, job.port, torch.device(job.device), layout_for(job.request))
    try:
        with tempfile.TemporaryDirectory(prefix=f"framepack-rank{job.rank}-") as folder:
            work = Work(job.request, job.origin, Path(folder) / "video.mp4", None, mp4_tags, lambda event: None,
                        SharedStop(threading.Event(), ranks), UsageMeter(None))
            with parallel(models.transformer, ranks):
                VideoPipeline(work, models, manager)()
    finally:
        session.release(manager)
        end_group()
