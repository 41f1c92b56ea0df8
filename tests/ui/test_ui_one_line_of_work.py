"""One machine, one line of work (issue 28): a Start while anything runs is refused at once, before a file is
written, naming what runs, with Stop on; each page's Resume is its own run; a run refused before it started
(an offline model set) leaves nothing in the outputs folder. Over a scripted engine: no models, fast."""
import threading

import pytest
from PIL import Image

from framepack_core.failures import ModelsUnavailableError
from tests.support.helpers import ScriptedEngine, cpu_session, tiny_request
from framepack_core.starts import FromPicture, begin
from ui.handlers import KEEP, Handlers, ServerSettings
from ui.outputs import OutputsHandlers
from ui.worker import Worker


@pytest.fixture
def busy(tmp_path, picture):
    """Handlers whose worker is making a video held at its first step (as a queue job would), the outputs
    folder empty but for that job's own files."""
    gate = threading.Event()
    worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: "models",
                                        engine=ScriptedEngine(sections=1, steps=2, gate=gate)))
    outputs = tmp_path / "out"
    job = worker.submit(begin(FromPicture(tiny_request(picture, path=tmp_path / "job" / "job.mp4"))), label="Queue job 7 (Queue tab)")
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=outputs))
    yield handlers, job, gate, outputs
    gate.set()
    worker.close()


def form(picture):
    return dict(model="tiny", image=Image.open(picture), end_image=None, keyframes=None, prompt="waves", seconds=1,
                steps=2.0, seed=5.0, gs=10, mode="model default", resolution=128.0, prompt_blend=0, loop=False,
                loras=None, crf=16.0, step_cache=True, vram_budget_gb=0, randomize=False, keyframe_times="")


def test_start_while_a_queue_job_runs_is_refused_at_once_and_writes_nothing(busy, picture):
    handlers, job, gate, outputs = busy
    updates = list(handlers.page_run(form(picture), page="A"))
    assert len(updates) == 1  # no wait: one answer
    refused = updates[0]
    assert refused.refused.startswith("Queue job 7 (Queue tab) is making a video on this machine now")
    assert (refused.running, refused.stoppable) == (False, True)  # Start stays on, and Stop works from here
    assert not outputs.exists() or list(outputs.iterdir()) == []
    # The Outputs tab's actions are refused the same way, in the same words, before looking at the run.
    assert list(OutputsHandlers(handlers).resume("no-such-run", page="A"))[-1].refused == refused.refused
    assert handlers.page_last("A") is None

    handlers.stop()  # the refused page's Stop ends the job's run
    gate.set()
    assert job.finished.wait(10) and job.run.outcome.stopped
    assert not handlers.worker.busy


def test_resume_on_the_generate_tab_is_the_pages_own_run(tmp_path, picture):
    gate = threading.Event()
    engine = ScriptedEngine(sections=2, steps=2, gate=gate, hold_after_section=True)
    worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: "models", engine=engine))
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path))
    try:
        gate.set()
        for update in handlers.page_run(form(picture), page="A"):
            if update.video not in (None, KEEP):  # the first section is done: page A presses Stop
                handlers.stop()
                gate.set()
        stopped = handlers.page_last("A")
        assert stopped.record().status == "stopped"
        # Page B made nothing: its Resume does not take page A's run, and writes nothing.
        before = sorted(p.name for p in tmp_path.iterdir())
        other = list(handlers.page_resume(page="B"))
        assert len(other) == 1 and "no stopped or failed run of this page" in other[0].refused
        assert sorted(p.name for p in tmp_path.iterdir()) == before and stopped.record().status == "stopped"
        engine.hold_after_section = False
        final = list(handlers.page_resume(page="A"))[-1]
        assert handlers.page_last("A").files == stopped.files and final.download == str(stopped.files.video)
        assert stopped.files.read_record()["status"] == "finished" and stopped.files.read_record()["frames"] == 74
    finally:
        worker.close()


def test_a_run_refused_before_it_started_leaves_no_files(tmp_path, picture):
    def offline(name, models_dir=None, progress=None):
        raise ModelsUnavailableError("The tiny model set is not downloaded and HF_HUB_OFFLINE forbids downloading.")

    worker = Worker(session=cpu_session(loader=offline, engine=ScriptedEngine()))
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path / "out"))
    try:
        final = list(handlers.page_run(form(picture), page="A"))[-1]
        assert "HF_HUB_OFFLINE forbids downloading" in final.progress
        assert list((tmp_path / "out").iterdir()) == []  # no failed record, no picture
    finally:
        worker.close()
