"""The job queue without models: the store's rules, intake from forms and files, the page's handlers."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from jobs.intake import add_job, export_jobs, import_file, read_rows
from jobs.store import JobStore

ROOT = Path(__file__).resolve().parents[2]


def job(store, picture, **settings):
    return add_job(store, {"image": str(picture), "model": "tiny", "prompt": "p", "resolution": 128} | settings)


def test_claim_order_move_cancel_retry_delete_clear(tmp_path, picture):
    store = JobStore(tmp_path)
    a, b, c = (job(store, picture, seed=s) for s in (1, 2, 3))
    store.move(c, -1)
    assert [j.id for j in store.jobs()] == [a, c, b]
    store.cancel(a)  # queued: stopped at once
    assert store.get(a).status == "stopped"
    first = store.claim("me:1")
    assert first.id == c and first.status == "running" and first.attempts == 1
    store.cancel(c)  # running: asked, not forced
    assert store.get(c).status == "running" and store.cancel_requested(c)
    store.delete(c)  # a running job cannot be deleted
    assert store.get(c) is not None
    store.finish(c, "finished", video="x.mp4")
    assert store.get(c).finishes == 1 and store.get(c).progress == 1
    store.retry(a)
    assert store.get(a).status == "queued" and store.claim("me:1").id == a
    store.delete(b)
    assert store.get(b) is None
    assert store.clear_finished() == 1
    assert [j.id for j in store.jobs()] == [a]


def test_a_jobs_end_records_the_sections_its_run_made_not_its_last_report(tmp_path, picture):
    """A Ray worker reports progress only when polled: a section written after the last report and
    before a cancel is honoured must still be counted, as the run's record counts it."""
    from framepack_core.events import Status
    from jobs.executor import apply_result
    from jobs.running import JobResult

    store = JobStore(tmp_path)
    cut, back, lost = (job(store, picture, seed=s) for s in (1, 2, 3))
    for job_id in (cut, back, lost):
        assert store.claim("me:1").id == job_id
        assert not store.report(job_id, 0.3, 1, "me:1")
    apply_result(store, store.get(cut), JobResult(Status.STOPPED, "cancelled", "cut.mp4", 2), "me:1")
    apply_result(store, store.get(back), JobResult(Status.INTERRUPTED, "interrupted; resumes", None, 3), "me:1")
    apply_result(store, store.get(lost), JobResult(Status.FAILED, "RuntimeError: boom"), "me:1")  # count unknown
    assert [(j.status, j.sections_done) for j in store.jobs()] == [("stopped", 2), ("queued", 3), ("failed", 1)]
    assert not store.finish(back, Status.STOPPED, sections_done=5, owner="someone-else:2:1")  # not its holder
    assert store.get(back).sections_done == 3


def test_a_dead_owner_here_gives_its_job_back_at_once_and_a_live_one_keeps_it(tmp_path, picture):
    """On this machine a gone owner is recognised before its lease ends: a dead pid, or a live pid that
    now belongs to another process (reused: the start time differs), which no pid check can tell."""
    import os
    import socket

    from jobs.leases import owner_id

    store = JobStore(tmp_path)
    dead, reused, live, clock_moved = (job(store, picture) for _ in range(4))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host, pid, started = owner_id().split(":")
    owners = {dead: owner_id(proc.pid), live: owner_id(),
              reused: f"{socket.gethostname()}:{os.getppid()}:12345.00",  # the pid runs, but not that process
              # this process, its start read before the wall clock crossed a second's edge (btime moved by 1 s)
              clock_moved: f"{host}:{pid}:{float(started) - 1:.2f}"}
    for _ in owners:
        store.claim("me:1:1")
    with store._transaction() as db:  # as if each had claimed its job (a claim itself takes dead ones back)
        db.executemany("UPDATE jobs SET owner = ? WHERE id = ?", [(o, i) for i, o in owners.items()])
    assert store.recover() == [dead, reused]
    assert [j.status for j in store.jobs()] == ["queued", "queued", "running", "running"]
    assert store.claim("x:1:1").attempts == 2  # the next attempt is counted


def test_a_lease_run_out_on_another_host_goes_back_and_is_run(tmp_path, picture, tiny_models):
    """Another machine's job is left alone while its lease holds, whatever its pid means here; once
    the lease has run out, any runner takes the job back and runs it to its video."""
    from tests.support.helpers import fixed_session

    from jobs.executor import LocalExecutor

    store = JobStore(tmp_path)
    # One section of the smallest useful window (not the default 5 s): the point is who may take the job.
    held, expired = (job(store, picture, seed=s, seconds=0.25, window=2, steps=1) for s in (1, 2))
    store.claim("another-host:1:1.00", lease=3600)  # pid 1 runs here too: meaningless for another host
    store.claim("another-host:2:1.00", lease=-1.0)  # its owner stopped renewing: the lease ran out
    assert store.get(held).lease_until > store.get(held).updated
    executor = LocalExecutor(store, fixed_session(tiny_models))
    assert executor.run_until_empty() == 1
    kept, run = store.get(held), store.get(expired)
    assert (kept.status, kept.owner, kept.attempts) == ("running", "another-host:1:1.00", 1)
    assert (run.status, run.attempts, run.finishes, run.owner) == ("finished", 2, 1, None)
    assert (tmp_path / run.video).is_file()


def test_renewal_keeps_a_lease_and_a_lost_one_stops_its_run_writing_nothing(tmp_path, picture, tiny_models):
    """The keeper renews the leases it holds; a job given to someone else meanwhile (this process was
    frozen past its lease) stops after the current step, and its end is not written over the new owner's."""
    import time

    from tests.support.helpers import fixed_session

    from framepack_core.events import SectionDone, Step
    from jobs.executor import LocalExecutor

    store = JobStore(tmp_path)
    job_id = job(store, picture, seconds=2, steps=2, seed=1)
    assert store.claim("me:1:1", lease=5) and store.renew(job_id, "me:1:1", lease=100)
    assert store.get(job_id).lease_until - time.time() > 50
    assert not store.renew(job_id, "someone-else:2:1")
    store.requeue(job_id)
    assert not store.renew(job_id, "me:1:1")  # back in the queue: held by nobody

    seen = []

    def on_event(job, event):
        seen.append(event)
        if isinstance(event, SectionDone):  # meanwhile the lease ran out and another runner took the job
            with store._transaction() as db:
                db.execute("UPDATE jobs SET owner = 'thief:9:1', lease_until = ? WHERE id = ?", (time.time() + 600, job.id))
            while not executor.leases.lost(job.id):
                time.sleep(0.01)

    executor = LocalExecutor(store, fixed_session(tiny_models), on_event=on_event)
    executor.leases.every = 0.01
    executor.run_one()
    taken = store.get(job_id)
    assert (taken.status, taken.owner, taken.finishes) == ("running", "thief:9:1", 0)
    sections = [e.section for e in seen if isinstance(e, SectionDone)]
    assert sections == [0] and not any(isinstance(e, Step) and e.section == 1 and e.step > 1 for e in seen)


def test_two_stores_on_one_file_never_claim_the_same_job(tmp_path, picture):
    one, two = JobStore(tmp_path), JobStore(tmp_path)
    ids = [job(one, picture, seed=s) for s in range(6)]
    claimed = []
    while True:
        got = [s.claim("h:1") for s in (one, two)]
        claimed += [j.id for j in got if j]
        if not all(got):
            break
    assert sorted(claimed) == ids


def test_jobs_keep_a_copy_of_their_picture_and_every_setting(tmp_path, picture):
    store = JobStore(tmp_path / "out")
    job_id = job(store, picture, seconds=2, seed=7, steps=3)
    settings = store.get(job_id).settings
    copy = tmp_path / "out" / settings["image"]
    assert copy.is_file() and settings["image_name"] == picture.name
    assert (Image.open(copy).tobytes() == Image.open(picture).convert("RGB").tobytes())
    assert (settings["seconds"], settings["seed"], settings["steps"], settings["mode"]) == (2, 7, 3, "inverted")


def test_bad_rows_are_reported_by_line_and_the_good_ones_queued(tmp_path, picture):
    store = JobStore(tmp_path / "out")
    lines = [json.dumps({"image": str(picture), "prompt": "one", "model": "tiny"}),
             "",
             json.dumps({"image": str(picture), "prompt": "two", "model": "tiny", "steps": 0}),
             "{not json",
             json.dumps({"image": picture.name, "prompt": "three", "model": "tiny", "seconds": 2}),
             json.dumps({"image": "missing.png", "prompt": "four", "model": "tiny"}),
             json.dumps({"image": str(picture), "prompt": "five", "model": "tiny", "colour": "red"})]
    path = picture.parent / "jobs.jsonl"  # relative pictures are found next to the file
    path.write_text("\n".join(lines) + "\n")
    added, errors = import_file(store, path)
    assert [store.get(i).settings["prompt"] for i in added] == ["one", "three"]
    assert [line for line, _ in errors] == [3, 4, 6, 7]
    assert "Steps must be between 1" in errors[0][1] and "Unknown setting: colour" in errors[3][1]


def test_csv_cells_are_read_as_settings(tmp_path, picture):
    text = ("image,prompt,seconds,step_cache,mode,seed\n"
            f"{picture},a cat,2.5,false,,5\n"
            f"{picture},\"a dog, running\",x,true,forward,6\n")
    rows = read_rows(text, "jobs.csv")
    assert rows[0] == (2, {"image": str(picture), "prompt": "a cat", "seconds": 2.5, "step_cache": False, "seed": 5})
    assert rows[1][0] == 3 and "seconds" in rows[1][1]


def test_export_imports_back_the_same_jobs(tmp_path, picture):
    store = JobStore(tmp_path / "a")
    job(store, picture, seed=1)
    job(store, picture, seed=2, prompt="second")
    exported = tmp_path / "queue.json"
    exported.write_text(json.dumps(export_jobs(store)))
    other = JobStore(tmp_path / "b")
    added, errors = import_file(other, exported)
    assert errors == [] and len(added) == 2
    strip = lambda s: {k: v for k, v in s.items() if k != "image"}
    assert [strip(j.settings) for j in other.jobs()] == [strip(j.settings) for j in store.jobs()]


def test_queue_cli_add_import_list(tmp_path, picture):
    out = tmp_path / "out"
    env_run = lambda *a: subprocess.run([sys.executable, "app.py", "queue", *a, "--outputs", str(out)],
                                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    refused = env_run("add", "--image", str(tmp_path / "missing.png"), "--prompt", "hi")
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")
    assert not out.exists()  # a refused job leaves no folder and no database behind
    assert env_run("list").stdout == "the queue is empty\n" and not out.exists()
    done = env_run("add", "--image", str(picture), "--prompt", "hi", "--model", "tiny", "--seed", "4")
    assert done.returncode == 0, done.stderr
    for flags in (["--extend", str(picture)], ["--bridge", str(picture), str(picture)]):
        other = env_run("add", "--image", str(picture), "--prompt", "hi", *flags)
        assert (other.returncode, other.stderr.strip()) == (2, "error: the queue makes new videos from pictures; "
                                                               f"{flags[0]} runs with `app.py generate`.")
    bad = env_run("add", "--image", str(picture), "--prompt", "hi", "--steps", "0")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: Steps must be")
    rows = tmp_path / "rows.csv"
    rows.write_text(f"image,prompt,model\n{picture},a,tiny\nnope.png,b,tiny\n")
    imported = env_run("import", str(rows), "--allow-folder", str(picture.parent))
    assert imported.returncode == 2 and "rows.csv, line 3:" in imported.stderr and "queued 1 job;" in imported.stderr
    listed = json.loads(env_run("list", "--json").stdout)
    assert [(j["id"], j["status"], j["prompt"]) for j in listed] == [(1, "queued", "hi"), (2, "queued", "a")]


def test_two_queue_runs_on_one_store_run_every_job_exactly_once(tmp_path, picture):
    """Two `queue run` processes started together on one queue of 6 jobs share the work: each job is
    claimed by one of them (its lease), and finished once."""
    out = tmp_path / "out"
    store = JobStore(out)
    # The smallest useful window (2 latent frames, one section): the point is who claims which job.
    ids = [job(store, picture, seed=n, seconds=0.25, window=2, steps=1) for n in range(6)]
    command = [sys.executable, "app.py", "queue", "run", "--outputs", str(out)]
    files = [tmp_path / f"run-{n}.log" for n in range(2)]  # files, not pipes: neither can block on a full one
    runs = []
    for path in files:
        with open(path, "w") as log:
            runs.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log))
    codes = [run.wait(timeout=600) for run in runs]
    logs = [path.read_text() for path in files]
    assert codes == [0, 0], logs
    started = [int(n) for log in logs for n in re.findall(r"^job (\d+): ", log, re.MULTILINE)]
    assert sorted(started) == ids  # each job started by one process, once
    wrote = [int(n) for log in logs for n in re.findall(r"^job (\d+) wrote \S+\.mp4$", log, re.MULTILINE)]
    assert sorted(wrote) == ids  # and each says which file it wrote
    jobs = store.jobs()
    assert [(j.status, j.attempts, j.finishes) for j in jobs] == [("finished", 1, 1)] * 6
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(j.video for j in jobs)


@pytest.fixture
def queue_page(tmp_path, tiny_models):
    from tests.support.helpers import fixed_session

    from ui.handlers import Handlers, ServerSettings
    from ui.queue_handlers import QueueHandlers
    from ui.worker import Worker

    worker = Worker(session=fixed_session(tiny_models))
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path))
    queue = QueueHandlers(handlers)
    yield queue
    queue.close()
    worker.close()


def test_page_adds_the_form_and_arranges_jobs(queue_page, picture):
    form = dict(image=Image.open(picture), prompt="from the page", seconds=1, seed=9, randomize=False, steps=2,
                gs=10, step_cache=True, model="tiny", mode="model default", end_image=None, resolution=128, crf=16,
                vram_budget_gb=0)
    paused = ' (the queue is paused: tick "Work through the queue" to start it)'
    assert queue_page.add(form) == f"Queued as job 1, number 1 in line; see the Queue tab{paused}."
    assert queue_page.add(form | {"seed": 10}) == f"Queued as job 2, number 2 in line; see the Queue tab{paused}."
    assert queue_page.add(form | {"image": None}).startswith("Not queued: Please give a picture")
    assert queue_page.act("down", 1) == "Job 1: down done."
    assert [row[0] for row in queue_page.rows()] == [2, 1]
    assert queue_page.act("cancel", "") == "Pick a job first (click its row)."
    queue_page.act("cancel", 2)
    assert queue_page.rows()[0][1] == "stopped"
    settings = queue_page.store.get(1).settings
    assert (settings["seed"], settings["mode"], settings["vram_budget_gb"]) == (9, "inverted", None)
    assert len(queue_page.thumbnails()) == 2


def test_page_works_through_the_queue_on_its_worker(queue_page, picture):
    import time

    form = dict(image=Image.open(picture), prompt="p", seconds=1, seed=3, randomize=False, steps=2, gs=10,
                step_cache=True, model="tiny", mode="model default", end_image=None, resolution=128, crf=16,
                vram_budget_gb=0)
    queue_page.add(form)
    queue_page.set_running(True)
    deadline = time.monotonic() + 120
    while queue_page.store.get(1).status != "finished" and time.monotonic() < deadline:
        time.sleep(0.2)
    job = queue_page.store.get(1)
    assert job.status == "finished" and queue_page.video(1).endswith(job.video)
    _, preview, video = queue_page.live_view()  # the job's live preview and video so far, as the tab shows them
    assert preview is not None and video is not None


def test_ray_costs_nothing_without_ray():
    """Neither `generate --help`, `queue --help` nor the page's modules import ray (or torch, for --help)."""
    for args in (["generate", "--help"], ["queue", "run", "--help"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "app.py", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0
        imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
        assert "ray" not in imported and "torch" not in imported and "framepack_core" in imported
    check = ("import sys, ui.serve, ui.cli, ui.queue_cli, jobs.executor, jobs.intake, jobs.running;"
             "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cancel_from_anywhere_stops_a_job_and_ctrl_c_puts_it_back(tmp_path, picture, tiny_models):
    """A cancel written to the store (another tab, another process) ends the running job as stopped;
    an interrupt (Ctrl+C) ends it too, but back in the queue, and the next run resumes it."""
    from tests.support.helpers import fixed_session

    from framepack_core.events import SectionDone
    from jobs.executor import LocalExecutor

    store = JobStore(tmp_path)
    # Two sections each, of the smallest useful window (2 latent frames).
    cancelled = job(store, picture, seconds=0.5, window=2, steps=2, seed=1)
    interrupted = job(store, picture, seconds=0.5, window=2, steps=2, seed=2)
    sections = []

    def on_event(job, event):
        if isinstance(event, SectionDone):
            sections.append((job.id, event.section))
            if job.id == cancelled:
                JobStore(tmp_path).cancel(job.id)  # as another process would
            else:
                executor.interrupt.set()

    executor = LocalExecutor(store, fixed_session(tiny_models), on_event=on_event)
    executor.report_every = 0  # tiny steps are fast: read the cancel flag at every one
    assert executor.run_until_empty() == 2
    first, second = store.get(cancelled), store.get(interrupted)
    assert (first.status, first.message, first.sections_done) == ("stopped", "cancelled", 1)
    assert (second.status, second.attempts) == ("queued", 1)
    assert sections == [(cancelled, 0), (interrupted, 0)]

    sections.clear()
    executor = LocalExecutor(store, fixed_session(tiny_models),
                             on_event=lambda job, event: isinstance(event, SectionDone) and sections.append(event.section))
    assert executor.run_until_empty() == 1
    second = store.get(interrupted)
    assert (second.status, second.attempts, second.finishes) == ("finished", 2, 1)
    assert sections == [1]  # resumed: only the second section was sampled


def test_a_job_the_page_cannot_take_now_goes_back_and_a_stop_from_elsewhere_stops_it(tmp_path, picture):
    from framepack_core.events import Finished
    from jobs.executor import LocalExecutor
    from jobs.running import NotNow

    store = JobStore(tmp_path)
    job_id = job(store, picture)

    def busy(run, emit):
        raise NotNow("waiting for the page's own video")

    LocalExecutor(store, execute=busy).run_one()
    back = store.get(job_id)
    assert (back.status, back.message) == ("queued", "waiting for the page's own video") and back.run_name

    def stopped_by_the_page(run, emit):  # the page's Stop ends whatever its worker runs
        return Finished(None, 0, 30, 0, 0, 0, 0, 0.0, stopped=True)

    LocalExecutor(store, execute=stopped_by_the_page).run_one()
    again = store.get(job_id)
    assert (again.status, again.run_name, again.attempts) == ("stopped", back.run_name, 2)
