"""Issue 27, finding 13: the API while the page works a queue job, and a queue job refused before it starts."""
import threading

import pytest

from tests.support.helpers import ScriptedEngine, cpu_session, tiny_request
from framepack_core.starts import FromPicture, begin
from jobs.executor import LocalExecutor
from jobs.intake import add_job
from jobs.store import JobStore
from ui.handlers import Handlers, ServerSettings
from ui.worker import Worker, WorkerBusy


def test_generate_while_a_queue_job_runs_is_refused_at_once_and_writes_nothing(tmp_path, picture):
    gate = threading.Event()
    worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: "models",
                                        engine=ScriptedEngine(sections=1, steps=2, gate=gate)))
    outputs = tmp_path / "out"
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=outputs))
    try:
        job = worker.submit(begin(FromPicture(tiny_request(picture, folder=outputs))))  # what the page's queue hands it
        before = sorted(p.name for p in outputs.iterdir())
        with pytest.raises(WorkerBusy, match="is making a video on this machine now"):
            handlers.api_run(str(picture), "waves", seconds=1, seed=3, steps=2)
        assert sorted(p.name for p in outputs.iterdir()) == before  # no record, no picture: nothing written
        gate.set()
        job.finished.wait(30)
        assert handlers.api_run(str(picture), "waves", seconds=1, seed=3, steps=2).endswith(".mp4")  # free again
    finally:
        gate.set()
        worker.close()


def test_a_queue_job_refused_before_it_starts_leaves_no_claim_file(tmp_path, picture):
    store = JobStore(tmp_path)
    job_id = add_job(store, {"image": str(picture), "model": "tiny", "prompt": "p", "resolution": 128})
    (tmp_path / store.get(job_id).settings["image"]).unlink()  # its picture's copy went missing
    executor = LocalExecutor(store, cpu_session(engine=ScriptedEngine()))
    assert executor.run_until_empty() == 1
    job = store.get(job_id)
    assert job.status == "failed" and job.run_name
    assert not (tmp_path / f"{job.run_name}.json").exists() and list(tmp_path.glob("*.json")) == []
