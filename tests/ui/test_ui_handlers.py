"""The page and API handlers over a scripted engine: updates, outputs folder, errors; progress text."""
import json

import numpy as np
import pytest
from PIL import Image

from framepack_core.events import Finished, Notice, Stage, Step
from framepack_core.method.buckets import nearest_bucket
from framepack_core.run.files import claim_files
from framepack_core.run.record import RunRecord
from tests.support.helpers import ScriptedEngine, cpu_session
from ui.handlers import FORM_FIELDS, KEEP, Handlers, ServerSettings, contact_sheet, summary_markdown
from ui.progress import RunProgress, clock_text
from ui.worker import Worker


@pytest.fixture
def handlers(tmp_path):
    workers = []

    def make(engine=None):
        worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: "models",
                                            engine=engine or ScriptedEngine(sections=2, steps=3)))
        workers.append(worker)
        return Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path / "out"))
    yield make
    for worker in workers:
        worker.close()


def page_form(picture, **change):
    """The page's form as gradio hands it over: a PIL picture, numbers from sliders as floats."""
    image = Image.open(picture) if picture is not None else None
    form = dict(model="tiny", image=image, end_image=None, keyframes=None, prompt="waves roll in", seconds=2,
                steps=3.0, seed=5.0, gs=10, mode="model default", resolution=128.0, prompt_blend=0, loop=False,
                loras=None, crf=16.0, step_cache=True, vram_budget_gb=0, randomize=False, keyframe_times="")
    # The advanced settings as their widgets give them (sliders as floats, "auto" for a setting left automatic).
    form |= dict(negative_prompt="", window=9.0, cfg=1.0, rs=0.0, variant="bh1", shift=0, cache_method="magcache",
                 cache_threshold=0.15, cache_calibrate=False, attention_requested="auto", fp8="off", compile=False,
                 vae_tiling="auto", gpus=1.0, upscale=1, upscaler="", interpolate=1)
    form = {name: form[name] for name in FORM_FIELDS}  # every field of the page's form, in its order
    return form | change


def test_the_advanced_widgets_reach_the_request(handlers, picture, tmp_path):
    from framepack_core.request import Request

    fields = handlers().request_fields(page_form(picture, negative_prompt="blurry", window=5.0, cfg=3.0, rs=0.5,
                                                 shift=0, cache_method="teacache", fp8="storage", vae_tiling=True,
                                                 gpus=2.0, upscale=2, upscaler="x2.pth", interpolate=4))
    request = Request.from_fields(**fields, folder=tmp_path).validated()
    method, speed = request.method, request.speed
    assert (method.negative_prompt, method.window, method.cfg, method.rs, method.shift) == ("blurry", 5, 3.0, 0.5, None)
    assert (speed.cache_method, speed.fp8, speed.vae_tiling, speed.attention_requested, speed.gpus) == (
        "teacache", "storage", True, "auto", 2)
    assert (request.output.upscale, request.output.upscaler, request.output.interpolate) == (2, "x2.pth", 4)


def test_page_run_streams_preview_progress_and_video_then_offers_the_download(handlers, picture, tmp_path):
    updates = list(handlers().page_run(page_form(picture)))
    first, last = updates[0], updates[-1]
    assert first.running is True and first.seed == 5 and first.video is None and first.download is None
    previews = [u.preview for u in updates[1:] if u.preview is not KEEP]
    assert previews and previews[-1].shape == (4 * 3 + 2, 6 * 3 + 2, 3)  # 9 frames in a 3x3 sheet
    videos = [u.video for u in updates[1:-1] if u.video is not KEEP]
    assert len(videos) == 2 and all(v.endswith(".mp4") for v in videos)  # after each section
    assert "Section 2 of 2" in updates[-2].progress and "Step 3 of 3" in updates[-2].progress
    assert last.running is False and "Done: 74 frames" in last.progress
    assert last.download == last.video and last.video.endswith("_5.mp4")
    assert "Seed 5" in last.summary and "74 frames" in last.summary and "step cache on" in last.summary

    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    stem = names[0].split(".")[0]
    assert names == [f"{stem}.json", f"{stem}.mp4", f"{stem}.png"]
    height, width = nearest_bucket(70, 100, 128)
    assert Image.open(out / f"{stem}.png").size == (width, height)  # cropped as the model sees it
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["status"] == "finished" and record["video"] == f"{stem}.mp4" and record["input"] == f"{stem}.png"
    assert record["settings"]["seed"] == 5 and record["settings"]["mode"] == "inverted" and record["frames"] == 74


def test_randomized_seed_is_written_back(handlers, picture):
    first = next(iter(handlers().page_run(page_form(picture, randomize=True))))
    assert isinstance(first.seed, int) and first.seed != 5


def test_bad_settings_are_one_message_and_nothing_is_written(handlers, picture, tmp_path):
    for args, words in ((page_form(None), "picture"), (page_form(picture, steps=0), "Steps"),
                        (page_form(picture, mode="forward", end_image=Image.open(picture)), "end frame")):
        updates = list(handlers().page_run(args))
        assert len(updates) == 1 and updates[0].running is False
        assert "fp-failed" in updates[0].progress and words in updates[0].progress
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_stop_keeps_the_video_so_far(handlers, picture):
    h = handlers(ScriptedEngine(sections=3, steps=50, step_seconds=0.002))
    updates = []
    for update in h.page_run(page_form(picture)):
        updates.append(update)
        if update.video not in (KEEP, None):
            h.stop()
    last = updates[-1]
    assert "Stopped; the video so far is kept" in last.progress and last.download
    assert last.running is False
    # and the next run works
    assert "Done" in list(h.page_run(page_form(picture)))[-1].progress


def test_api_run_returns_the_mp4_and_reports_failures(handlers, picture):
    h = handlers(ScriptedEngine(sections=1, steps=2))
    path = h.api_run(picture, "waves", seconds=1, seed=3, steps=2)
    assert path.endswith("_3.mp4")
    with pytest.raises(ValueError, match="Steps"):
        h.api_run(picture, "waves", seconds=1, seed=3, steps=0)


def test_progress_counts_steps_over_all_sections_and_estimates_the_rest(monkeypatch):
    from framepack_core.run.progress import CostedProgress

    monkeypatch.setattr(CostedProgress, "learned", None)  # no decode measured by earlier runs of this process
    now = [100.0]
    p = RunProgress(clock=lambda: now[0])
    p.update(Stage("loading", "loading VAE…"))
    now[0] = 110.0
    p.update(Stage("sampling", "Sampling section 1 of 2"))
    now[0] = 130.0
    # Half of all steps in 20 s of sampling; each section's decode is expected to cost its sampling until one is
    # measured: a quarter of the work done, three quarters (60 s) left.
    p.update(Step(0, 2, 10, 10))
    assert p.fraction == 0.25 and p.eta == pytest.approx(60.0) and clock_text(p.elapsed) == "0:30"
    p.update(Notice("The prompt was cut <short>."))
    html = p.html()
    assert "Section 1 of 2 · Step 10 of 10" in html and "about 1:00 left" in html and "&lt;short&gt;" in html
    p.update(Finished(None, 0, 30, 0, 0, 0, 1, 30.0, stopped=True))
    assert p.eta is None and "Stopped before the first section" in p.html()
    assert clock_text(3725) == "1:02:05"


def test_contact_sheet_and_names():
    strip = np.arange(2 * 12 * 3, dtype=np.uint8).reshape(2, 12, 3)
    sheet = contact_sheet(strip, 4, gap=1)  # four 2x3 frames in 2x2
    assert sheet.shape == (5, 7, 3)
    assert (sheet[3:5, 4:7] == strip[:, 9:12]).all() and (sheet[2] == 255).all()
    assert contact_sheet(strip, 5) is strip  # not divisible: left as it is
    summary = summary_markdown(RunRecord(model="tiny", settings=dict(seed=9, seconds=1, steps=4, gs=10, mode="inverted",
                                                                     resolution=128, crf=16), status="running"))
    assert summary.startswith("**Seed 9**")


def test_run_names_never_collide(tmp_path):
    first = claim_files(tmp_path, 1)
    second = claim_files(tmp_path, 1)  # same second, same seed: the first's claim (its record) is seen
    assert second.name != first.name and second.name.startswith(first.name) and first.record.is_file()
