"""Stop in every stage, and injected failures (OOM, any exception) through the worker and the page handlers,
on the real tiny model set: each ends its run with a clear message, and the next run works."""
import pytest
import torch

import framepack_core.engine.generation as generation
import framepack_core.engine.session as session_module
from framepack_core.events import Failed, Finished, SectionDone, Stage, Step
from framepack_core.engine.session import make_manager
from tests.support.helpers import cpu_session, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import FromPicture, begin
from ui.handlers import Handlers, ServerSettings
from ui.worker import Worker


def request(picture, **kw):
    return tiny_request(picture, **(dict(prompt="leaves sway", seconds=2.4, steps=2) | kw))


def progress_path(output):
    return output.with_name(f"{output.stem}.in-progress.mp4")


@pytest.mark.parametrize("stage", ["encoding_prompt", "encoding_image", "sampling", "decoding", "writing"])
def test_stop_in_every_stage_ends_the_run_promptly(tiny_models, picture, tmp_path, stage):
    """Stop pressed the moment a stage begins: the run ends stopped, at the latest after the section under way."""
    def stop_at_stage(event, run):
        if isinstance(event, Stage) and event.name == stage:
            run.stop()

    output = tmp_path / "v.mp4"
    events = run_events(request(picture), tiny_models, output, on_event=stop_at_stage)  # two sections
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stopped, events[-1]
    assert [e.name for e in events if isinstance(e, Stage)].count(stage) == 1  # no stage of that kind again
    after = events[next(i for i, e in enumerate(events) if isinstance(e, Stage) and e.name == stage):]
    assert len([e for e in after if isinstance(e, Step)]) <= 1  # the step under way, no more
    later = {e.name for e in after[1:] if isinstance(e, Stage)}
    assert later <= ({"writing"} if stage == "decoding" else set()), later  # a decoded section is still written
    assert finished.sections <= 1 and not progress_path(output).exists()
    if finished.sections:  # stopped while the first section was decoded or written: that section is kept
        assert mp4_info(output)[1].shape[0] == finished.frames
    else:
        assert finished.video is None and not output.exists()


@pytest.fixture
def tiny_worker(tiny_models, monkeypatch):
    """A worker over the session's tiny models that counts how often it gave memory back."""
    released = {"manager": 0, "cuda": 0}
    made = []

    def manager_factory(device, budget, models, req):
        manager = make_manager(device, budget, models, req)
        real = manager.release

        def release():
            released["manager"] += 1
            real()
        manager.release = release
        made.append(manager)
        return manager

    monkeypatch.setattr(session_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(session_module.torch.cuda, "empty_cache", lambda: released.__setitem__("cuda",
                                                                                            released["cuda"] + 1))
    worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: tiny_models,
                                        manager_factory=manager_factory))
    worker.released = released
    yield worker
    worker.close()


def page_form(picture, **change):
    form = dict(image=picture, prompt="leaves sway", seconds=1, seed=3, randomize=False, steps=2, gs=10,
                step_cache=True, model="tiny", mode="model default", end_image=None, resolution=128, crf=16,
                vram_budget_gb=0)
    return form | change


@pytest.mark.parametrize("injected, words", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ["ran out of memory", "resolution",
                                                                                "VRAM budget"]),
    (RuntimeError("injected decoder fault"), ["Generation failed", "injected decoder fault"]),
])
def test_failure_in_a_run_is_reported_on_the_page_and_the_next_run_works(tiny_worker, picture, tmp_path,
                                                                         monkeypatch, injected, words):
    real = generation.decode_latents

    def failing(vae, latents):
        raise injected

    handlers = Handlers(tiny_worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path))
    monkeypatch.setattr(generation, "decode_latents", failing)
    updates = list(handlers.page_run(page_form(picture)))
    final = updates[-1]
    assert final.running is False
    for word in words:
        assert word in final.progress, final.progress
    assert "Traceback" not in final.progress and "Failed:" in final.summary
    assert tiny_worker.released["manager"] == 1 and tiny_worker.released["cuda"] >= 1
    assert not tiny_worker.busy and not list(tmp_path.glob("*.mp4"))

    monkeypatch.setattr(generation, "decode_latents", real)
    updates = list(handlers.page_run(page_form(picture, seed=4)))
    assert "Done: 37 frames" in updates[-1].progress
    assert mp4_info(updates[-1].download)[1].shape[0] == 37
    assert tiny_worker.released["manager"] == 2


def test_out_of_memory_while_preparing_is_actionable_too(tiny_models, picture, tmp_path):
    def oom_factory(device, budget, models, req):
        raise torch.OutOfMemoryError("CUDA out of memory")

    worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: tiny_models,
                                        manager_factory=oom_factory))
    try:
        events = list(_drain(worker.submit(begin(FromPicture(request(picture, seconds=1, path=tmp_path / "a.mp4"))))))
        assert isinstance(events[-1], Failed) and "ran out of memory" in events[-1].message
    finally:
        worker.close()


def _drain(job):
    for batch in job.batches(timeout=0.05):
        yield from batch


def test_stop_while_loading_the_real_models_makes_nothing(tiny_models, picture, tmp_path):
    jobs = []

    def loader(name, models_dir=None, progress=None):
        progress("loading")
        jobs[0].stop()  # Stop pressed while the weights load
        return tiny_models

    worker = Worker(session=cpu_session(loader=loader))
    try:
        jobs.append(worker.submit(begin(FromPicture(request(picture, seconds=1, path=tmp_path / "a.mp4")))))
        events = list(_drain(jobs[0]))
        assert isinstance(events[-1], Finished) and events[-1].stopped and events[-1].video is None
        assert not any(isinstance(e, (Step, SectionDone)) for e in events)
        assert not list(tmp_path.glob("*.mp4"))
    finally:
        worker.close()


def test_a_long_prompt_is_truncated_with_a_notice_on_the_page(tiny_worker, picture, tmp_path):
    handlers = Handlers(tiny_worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path))
    updates = list(handlers.page_run(page_form(picture, prompt="a leaf falls slowly " * 300)))
    assert "Done: 37 frames" in updates[-1].progress
    assert "longer than the text encoder reads" in updates[-1].progress
    short = list(handlers.page_run(page_form(picture, seed=5)))
    assert "longer than" not in short[-1].progress
