"""`python app.py queue ...`: the job queue without the page.

    queue add --image P --prompt T [generate's flags]    one job
    queue import FILE                                    JSON Lines or CSV, one job a row
    queue add-folder DIR --prompt T [flags]              one job per picture
    queue list [--json]
    queue cancel|retry|delete JOB [JOB ...]              one or more jobs, by number
    queue clear                                          the finished jobs off the list (videos stay)
    queue run [--ray [auto|ADDRESS]]                     until the queue is empty

Model libraries (and Ray) are imported only by `run`.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from .cli import settings_from_args, told_stage
from .flags import BUDGET_FLAGS, add_setting_flags

# Flags whose names differ from the request's; every other flag named like a request setting is one.
def queue_command(args) -> int:
    from jobs.store import JobStore, StoreError

    store = JobStore(args.outputs)  # writes nothing until a job is added: a refused one leaves no folder
    try:
        return {"add": _add, "import": _import, "add-folder": _add_folder, "list": _list, "run": _run,
                "cancel": _act, "retry": _act, "delete": _act, "clear": _clear}[args.queue_command](store, args)
    except StoreError as error:  # a damaged, read-only or foreign queue file: its one sentence
        _say(f"error: {error}")
        return 2


# What each action did, read back from the job (the store changes nothing where an action does not apply).
_DONE = {"cancel": "cancelled", "retry": "queued again", "delete": "deleted (its video stays)"}


def _act(store, args) -> int:
    """cancel, retry or delete the jobs named; exit 2 if any was not there or the action did not apply."""
    action, bad = args.queue_command, 0
    for job_id in args.jobs:
        before = store.get(job_id)
        if before is None:
            _say(f"job {job_id}: there is no such job")
            bad += 1
            continue
        getattr(store, action)(job_id)
        after = store.get(job_id)
        if action == "delete" and after is not None:
            _say(f"job {job_id} is running: cancel it first")
        elif action == "cancel" and after.status == "running":
            _say(f"job {job_id} stops after its current step")
            continue
        elif action != "delete" and (after.status, after.message) == (before.status, before.message):
            _say(f"job {job_id} is {after.status}: nothing to {action}")
        else:
            _say(f"job {job_id} {_DONE[action]}")
            continue
        bad += 1
    return 2 if bad else 0


def _clear(store, args) -> int:
    removed = store.clear_finished()
    _say(f"removed {removed} finished job{'s' if removed != 1 else ''} from the list (their videos stay)")
    return 0


def _add(store, args) -> int:
    from jobs.intake import add_job

    if getattr(args, "output", None):
        _say("note: --output is ignored for queued jobs; videos go to the queue's outputs folder")
    others = [flag for flag, dest in (("--resume", "resume"), ("--extend", "extend"), ("--from", "from_seconds"),
                                      ("--bridge", "bridge")) if getattr(args, dest, None) is not None]
    if others:
        _say(f"error: the queue makes new videos from pictures; {others[0]} runs with `app.py generate`.")
        return 2
    try:
        job_id = add_job(store, settings_from_args(args), base=Path.cwd())
    except ValueError as error:
        _say(f"error: {error}")
        return 2
    _say(f"queued job {job_id}")
    return 0


def _import(store, args) -> int:
    from jobs.intake import import_file

    path = Path(args.file)
    if not path.is_file():
        _say(f"error: no such file: {path}")
        return 2
    # Its rows name files the user did not type: only from the folders the user named (and the file's own).
    added, errors = import_file(store, path, [path.parent, *map(Path, args.allow_folder)])
    for line, message in errors:
        _say(f"{path.name}, line {line}: {message}")
    _say(f"queued {len(added)} job{'s' if len(added) != 1 else ''}" + (f"; {len(errors)} bad row"
         f"{'s' if len(errors) != 1 else ''} left out" if errors else ""))
    return 2 if errors else 0


def _add_folder(store, args) -> int:
    from jobs.intake import add_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        _say(f"error: no such folder: {folder}")
        return 2
    added, errors = add_folder(store, folder, {k: v for k, v in settings_from_args(args).items() if k != "image"})
    for name, message in errors:
        _say(f"{name}: {message}")
    _say(f"queued {len(added)} job{'s' if len(added) != 1 else ''}")
    return 2 if errors and not added else 0


def _list(store, args) -> int:
    from jobs.store import StoreError

    if store.path.exists():  # a job whose runner was killed is queued again at once, not "running" for a minute
        try:
            store.recover()
        except StoreError:
            pass  # a read-only queue can still be listed
    jobs = store.jobs()
    if args.json:
        print(json.dumps([job.summary() for job in jobs]), flush=True)
        return 0
    if not jobs:
        print("the queue is empty", flush=True)
        return 0
    print(f"{'#':>4}  {'status':<8} {'done':>6}  {'picture':<24} {'prompt':<40} video / message", flush=True)
    for job in jobs:
        extra = job.video or job.message
        print(f"{job.id:>4}  {job.status:<8} {job.progress * 100:5.1f}%  {job.label[:24]:<24} "
              f"{job.prompt[:40]:<40} {extra or ''}", flush=True)
    if not jobs:
        print("the queue is empty", flush=True)
    return 0


def _announce(job) -> None:
    _say(f"job {job.id}: {job.label} - {job.prompt[:60]}")


def _run(store, args) -> int:
    try:
        executor, failures = executor_from_args(store, args)
    except ValueError as error:
        _say(f"error: {error}")
        return 2

    def stop(signum, frame):
        _say("stopping after the current step; the job resumes next time (Ctrl+C again to quit now)…")
        executor.interrupt.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    before = signal.signal(signal.SIGINT, stop)
    try:
        count = executor.run_until_empty()
    except failures as error:
        _say(f"error: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}")
        return 2
    finally:
        signal.signal(signal.SIGINT, before)
    from framepack_core.events import Status

    jobs = store.jobs()
    left = sum(job.status == Status.QUEUED for job in jobs)
    failed = [job for job in jobs if job.status == Status.FAILED]
    _say(f"ran {count} job{'s' if count != 1 else ''}; {left} queued" + (f", {len(failed)} failed" if failed else ""))
    return 130 if executor.interrupt.is_set() else 0


def executor_from_args(store, args):
    """(what works through the queue, the errors it reports in one line): Ray workers (--ray) or this
    process, with the flags' session configuration either way. ValueError when --ray is asked for and
    Ray is not installed."""
    from framepack_core.engine.session_config import SessionConfig

    config = SessionConfig.from_args(args)
    if args.ray is not None:
        try:
            from ray.exceptions import RayError

            from jobs.ray_pool import RayExecutor, RayUnavailable
        except ImportError:
            raise ValueError("--ray needs Ray, which is optional: pip install ray==2.60.0") from None
        # Jobs run side by side on the workers: one line per event, each naming its job (no bars).
        executor = RayExecutor(store, address=args.ray, cpu_workers=args.workers, config=config, on_job=_announce,
                               say=_say, on_event=lambda job, event: _job_line(job, event))
        return executor, (RayUnavailable, RayError)  # one line each, never a traceback
    from framepack_core.engine.session import Session
    from jobs.executor import LocalExecutor

    from .cli import TerminalProgress

    progress = TerminalProgress()

    def on_event(job, event) -> None:
        progress(event)
        from framepack_core.events import Finished

        if isinstance(event, Finished) and event.video is not None:  # which file each job wrote
            progress.say(f"job {job.id} wrote {event.video}")
    return LocalExecutor(store, Session(config), on_event=on_event, on_job=_announce), ()


def _job_line(job, event) -> None:
    """A Ray job's event as the local run prints it, after its job's number."""
    from framepack_core.events import Failed, Notice, SectionDone

    if isinstance(event, Notice) or told_stage(event):
        _say(f"job {job.id}: {event.message}")
    elif isinstance(event, SectionDone):
        _say(f"job {job.id}: section {event.section + 1}/{event.sections} done: {event.frames} frames")
    elif isinstance(event, Failed):
        _say(f"job {job.id}: error: {event.message}")


def add_queue_parser(commands, generate) -> None:
    """The `queue` sub-commands; `add` and `add-folder` take every flag of `generate` (its parser, as parent)."""
    queue = commands.add_parser("queue", help="a job queue that survives restarts: add, import, list, run, "
                                "cancel, retry, delete, clear",
                                allow_abbrev=False)
    sub = queue.add_subparsers(dest="queue_command", required=True)
    sub.add_parser("add", parents=[generate], conflict_handler="resolve", allow_abbrev=False,
                   help="queue one job (the flags of `generate`)")
    # add-folder takes --image too (ignored: each picture of DIR is one); hiding it here would take it off the
    # action argparse shares with `generate`, whose help would then show it as a positional argument.
    folder = sub.add_parser("add-folder", parents=[generate], conflict_handler="resolve", allow_abbrev=False,
                            help="queue one job per picture in a folder")
    folder.add_argument("folder", metavar="DIR")
    imp = sub.add_parser("import", allow_abbrev=False, help="queue the rows of a JSON Lines or CSV file "
                         "(image, prompt and any setting by name, one job a row)")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--allow-folder", action="append", default=[], metavar="DIR",
                     help="a folder whose pictures the file's rows may name (repeat for several); without it only "
                          "pictures in the file's own folder and below")
    listing = sub.add_parser("list", allow_abbrev=False, help="the jobs and their status")
    listing.add_argument("--json", action="store_true", help="as one JSON list")
    run = sub.add_parser("run", allow_abbrev=False, help="work through the queue until it is empty")
    run.add_argument("--ray", nargs="?", const="local", default=None, metavar="auto|ADDRESS",
                     help="hand jobs to a Ray cluster, one worker per GPU: a new local one (no value; "
                          "RAY_ADDRESS is ignored), the running one or RAY_ADDRESS's (auto) or one at "
                          "ADDRESS (pip install ray first)")
    run.add_argument("--workers", type=int, default=1,
                     help="with --ray on a cluster without GPUs: CPU workers to start (default 1)")
    add_setting_flags(run, BUDGET_FLAGS)
    acts = []
    for name, words in (("cancel", "stop jobs (a running one after its current step; it keeps what it made)"),
                        ("retry", "queue stopped or failed jobs again (they resume where they stopped)"),
                        ("delete", "remove jobs from the list (not a running one; their videos stay)")):
        act = sub.add_parser(name, allow_abbrev=False, help=words)
        act.add_argument("jobs", type=int, nargs="+", metavar="JOB", help="the job's number (queue list's #)")
        acts.append(act)
    acts.append(sub.add_parser("clear", allow_abbrev=False, help="remove the finished jobs from the list "
                               "(their videos stay)"))
    for parser in (imp, listing, run, *acts):
        add_setting_flags(parser, ("folder",), folder=dict(help="the queue's folder (videos and queue.sqlite3)"))


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
