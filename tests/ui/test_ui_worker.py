"""The worker thread with a scripted engine: event order, snapshots, Stop, busy, lazy loading."""
import threading
import time
from pathlib import Path

import pytest

from framepack_core.events import Failed, Finished, SectionDone, Step
from tests.support.helpers import ScriptedEngine, cpu_session, tiny_request
from framepack_core.starts import FromPicture, begin
from ui.worker import Worker, WorkerBusy


def new_run(picture, output, model="tiny"):
    return begin(FromPicture(tiny_request(picture, model=model, path=output)))


def collect(job, timeout=10):
    events, deadline = [], time.monotonic() + timeout
    for batch in job.batches(timeout=0.05):
        events += batch
        assert time.monotonic() < deadline, "the run did not end"
    return events


@pytest.fixture
def loads():
    return []


@pytest.fixture
def make_worker(loads):
    workers = []

    def make(engine):
        def loader(name, models_dir=None, progress=None):
            progress(f"loading {name}")
            loads.append(name)
            return f"models:{name}"
        worker = Worker(session=cpu_session(loader=loader, engine=engine))
        workers.append(worker)
        return worker
    yield make
    for worker in workers:
        worker.close()


def test_events_in_order_and_section_videos_are_private_snapshots(make_worker, picture, tmp_path):
    worker = make_worker(ScriptedEngine(sections=2, steps=3))
    events = collect(worker.submit(new_run(picture, tmp_path / "out.mp4")))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["Stage", "Stage"] and "loading" in events[1].message  # load shown as progress
    assert kinds.count("Step") == 6 and kinds.count("Preview") == 6 and kinds[-1] == "Finished"
    sections = [e for e in events if isinstance(e, SectionDone)]
    assert [s.frames for s in sections] == [37, 74]
    # Each section's video is a copy that the engine's later rename cannot take away.
    assert [s.video.read_bytes() for s in sections] == [b"video after section 0", b"video after section 1"]
    assert all(s.video.parent.is_relative_to(worker.scratch) for s in sections)
    assert events[-1].video == tmp_path / "out.mp4" and (tmp_path / "out.mp4").exists()
    assert not worker.busy


def test_stop_ends_within_a_step_keeps_the_partial_video_and_the_next_run_works(make_worker, picture, tmp_path, loads):
    gate = threading.Event()
    engine = ScriptedEngine(sections=3, steps=4, gate=gate, hold_after_section=True)
    worker = make_worker(engine)
    job = worker.submit(new_run(picture, tmp_path / "a.mp4"))
    events = []
    gate.set()
    for batch in job.batches(timeout=0.05):
        events += batch
        if any(isinstance(e, SectionDone) for e in batch) and not job.cancel.is_set():
            # The engine holds before section 2's first step (it cleared the gate) while Stop is pressed.
            assert worker.stop()
            gate.set()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stopped and finished.sections >= 1
    steps_after_stop = [e for e in events if isinstance(e, Step) and e.section == finished.sections]
    assert len(steps_after_stop) <= 1  # the step under way, and no more
    assert finished.video == tmp_path / "a.mp4" and finished.video.exists()

    engine.hold_after_section = False
    gate.set()
    second = collect(worker.submit(new_run(picture, tmp_path / "b.mp4")))
    assert isinstance(second[-1], Finished) and not second[-1].stopped
    assert loads == ["tiny"]  # the models stay loaded between runs


def test_one_run_at_a_time(make_worker, picture, tmp_path):
    gate = threading.Event()
    worker = make_worker(ScriptedEngine(sections=1, steps=2, gate=gate))
    job = worker.submit(new_run(picture, tmp_path / "a.mp4"))
    with pytest.raises(WorkerBusy):
        worker.submit(new_run(picture, tmp_path / "b.mp4"), wait=0.1)
    gate.set()
    collect(job)
    assert not worker.stop()  # nothing running any more


def test_another_model_set_replaces_the_loaded_one(make_worker, picture, tmp_path, loads):
    engine = ScriptedEngine(sections=1, steps=1)
    worker = make_worker(engine)
    for name in ("tiny", "tiny", "framepack", "tiny"):
        collect(worker.submit(new_run(picture, tmp_path / f"{len(loads)}.mp4", name)))
    assert loads == ["tiny", "framepack", "tiny"]
    assert engine.models_seen == ["models:tiny", "models:tiny", "models:framepack", "models:tiny"]


def test_loading_failure_is_one_failed_event_and_the_worker_recovers(picture, tmp_path):
    def broken_loader(name, models_dir=None, progress=None):
        raise OSError("disk on fire")
    worker = Worker(session=cpu_session(loader=broken_loader, engine=ScriptedEngine()))
    run = new_run(picture, tmp_path / "a.mp4")
    events = collect(worker.submit(run))
    assert isinstance(events[-1], Failed) and events[-1].message == "Generation failed: OSError: disk on fire"
    assert run.files.read_record()["status"] == "failed"
    assert not worker.busy
    worker.close()


def test_stop_while_loading_makes_nothing(picture, tmp_path):
    release = threading.Event()

    def slow_loader(name, models_dir=None, progress=None):
        release.wait(5)
        return "models"
    engine = ScriptedEngine()
    worker = Worker(session=cpu_session(loader=slow_loader, engine=engine))
    job = worker.submit(new_run(picture, tmp_path / "a.mp4"))
    worker.stop()
    release.set()
    events = collect(job)
    assert isinstance(events[-1], Finished) and events[-1].stopped and events[-1].video is None
    assert engine.models_seen == [] and not Path(tmp_path / "a.mp4").exists()
    worker.close()
