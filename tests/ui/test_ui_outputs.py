"""The Outputs tab's listing and actions, in plain Python: runs read from their records, Remake, Resume,
Extend, Branch here and Delete (the browser test clicks the same through the page)."""
import json

import numpy as np
import pytest

from framepack_core.events import SectionDone
from framepack_core.media.latents import load_latents
from framepack_core.request import remake_fields
from framepack_core.settings import SETTINGS
from tests.support.helpers import ScriptedEngine, cpu_session, fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import Bridge, Extend, FromPicture, begin
from ui.handlers import FORM_FIELDS, Handlers, ServerSettings
from ui.outputs import OutputsHandlers, folder_version, list_runs
from ui.progress import idle_html
from ui.worker import Worker


@pytest.fixture
def outputs(tmp_path):
    """Tab handlers over an empty outputs folder; the worker runs a scripted engine (no model)."""
    workers = []

    def make(engine=None, session=None, lora_dir=None):
        worker = Worker(session=session or cpu_session(engine=engine or ScriptedEngine(sections=2, steps=2)))
        workers.append(worker)
        settings = ServerSettings(model="tiny", resolution=128, outputs=tmp_path / "out", lora_dir=lora_dir)
        return OutputsHandlers(Handlers(worker, settings))
    yield make
    for worker in workers:
        worker.close()


def _make(tab: OutputsHandlers, picture, created: str, **fields) -> str:
    """A finished run through the page's own Start, its record dated `created`; its name."""
    form = dict(image=str(picture), prompt="waves roll in", seconds=2, seed=5, randomize=False, steps=3, gs=10,
                step_cache=True, model="tiny", mode="model default", end_image=None, resolution=128, crf=16,
                vram_budget_gb=0, prompt_blend=0, loras=None, keyframes=None, keyframe_times="", loop=False) | fields
    assert set(form) <= set(FORM_FIELDS)  # the advanced ones left out: their defaults
    list(tab.handlers.page_run(form))
    files = tab.handlers.last_run.files
    files.write_record(files.read_record() | {"created": created})
    return files.name


def test_runs_are_listed_newest_first_from_their_records(outputs, picture):
    tab = outputs()
    older = _make(tab, picture, "2026-01-02T10:00:00", prompt="first", seed=1)
    newer = _make(tab, picture, "2026-03-04T11:12:13", prompt="second", seed=2)
    (tab.folder / "notes.json").write_text('{"not": "a run"}')  # another program's JSON
    (tab.folder / "broken.json").write_text("{")
    (tab.folder / "claimed.json").write_text("{}\n")  # a name being claimed right now

    # Named by prompt and time; the file name last (what a picked row acts on).
    assert tab.rows() == [["second · 03-04 11:12", "2.47 s", "finished", "", newer],  # 74 frames at 30 fps
                          ["first · 01-02 10:00", "2.47 s", "finished", "", older]]
    assert [caption for _, caption in tab.thumbnails()] == ["second · 03-04 11:12", "first · 01-02 10:00"]
    # The scripted engine's "videos" are not MP4s: the start picture stands in for a frame of them.
    assert tab.thumbnails()[0][0] == str(tab.folder / f"{newer}.png")
    video, settings = tab.details(newer)
    assert video == str(tab.folder / f"{newer}.mp4") and "| What should happen | second |" in settings
    assert "| Seed | 2 |" in settings and "```json" not in settings


def test_the_listing_follows_the_folder(outputs, picture, tmp_path):
    tab = outputs()
    assert list_runs(tmp_path / "nowhere") == [] and tab.rows() == [["", "", "", "", ""]]
    before = folder_version(tab.folder)
    name = _make(tab, picture, "2026-01-02T10:00:00")  # as `generate` or the queue would: a record appears
    assert folder_version(tab.folder) != before and [run.name for run in tab.runs()] == [name]


def test_remake_fills_the_form_with_the_records_settings(outputs, picture, tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    tab = outputs(lora_dir=loras)
    # 2.5 s: two sections, one for each timed prompt (at 1.5 s the one section would leave "b" none: refused).
    name = _make(tab, picture, "2026-01-02T10:00:00", prompt="[0s: a] [1s: b]", seconds=2.5, seed=77, steps=4,
                 gs=7.5, step_cache=False, crf=20, prompt_blend=1, mode="inverted")
    form = tab.remake_form(name)
    assert set(form) == set(FORM_FIELDS)
    assert {k: form[k] for k in ("prompt", "seconds", "seed", "steps", "gs", "step_cache", "crf", "prompt_blend",
                                 "mode", "model", "resolution", "randomize", "end_image", "loras")} == \
        {"prompt": "[0s: a] [1s: b]", "seconds": 2.5, "seed": 77, "steps": 4, "gs": 7.5, "step_cache": False,
         "crf": 20, "prompt_blend": 1, "mode": "inverted", "model": "tiny", "resolution": 128, "randomize": False,
         "end_image": None, "loras": []}
    assert form["image"] == str(tab.folder / f"{name}.png")
    record = json.loads((tab.folder / f"{name}.json").read_text())
    fields = remake_fields(record)
    # A setting left automatic (None) shows as its widget's "auto" value (VRAM budget 0, shift 0, VAE tiling auto).
    automatic = {key for key in form if key in SETTINGS and SETTINGS[key].optional and fields.get(key) is None}
    assert all(form[key] == SETTINGS[key].widget.auto for key in automatic)
    assert all(form[key] == fields[key] for key in form if key in fields and key not in automatic)


def test_remake_of_a_run_that_continues_a_video_says_how_to_make_it_again(outputs, picture):
    tab = outputs()
    name = _make(tab, picture, "2026-01-02T10:00:00", seed=3)
    files = tab.find(name).files
    for continued, words in (({"extends": "a.mp4"}, "continues a.mp4,"), ({"branches": "a.mp4", "from_seconds": 1.2},
                             "continues a.mp4,"), ({"bridges": ["a.mp4", "b.mp4"]}, "continues a.mp4 and b.mp4,")):
        record = files.read_record()
        files.write_record({k: v for k, v in record.items() if k not in ("extends", "branches", "bridges")} | continued)
        with pytest.raises(ValueError) as refused:
            tab.remake_form(name)
        assert str(refused.value) == (f"{name} {words} which the Generate tab cannot; make it again with Extend, "
                                      "Branch here or Bridge on that video.")


def test_delete_removes_that_runs_files_and_nothing_else(outputs, picture):
    tab = outputs()
    name = _make(tab, picture, "2026-01-02T10:00:00", seed=3)
    other = _make(tab, picture, "2026-01-02T10:00:01", seed=3)  # same second and seed: NAME-2
    (tab.folder / f"{name}.latents.safetensors").write_bytes(b"x")
    (tab.folder / f"{name}.notes.txt").write_text("mine")  # not a run file: kept
    (tab.folder / f".{name}.upscale-x2.parts").mkdir()  # its upscale's parts made as it went, and them joined
    (tab.folder / f"{name}.upscale-x2-so-far.mp4").write_bytes(b"x")
    (tab.folder / f".{name}.upscaled-x2.parts").mkdir()  # another run's (the upscale of it): kept
    before = {p.name for p in tab.folder.iterdir()}
    assert tab.delete(name) == f"Deleted {name} (5 files)."
    gone = {f"{name}.{suffix}" for suffix in ("mp4", "png", "json", "latents.safetensors", "upscale-x2-so-far.mp4")}
    gone.add(f".{name}.upscale-x2.parts")
    assert {p.name for p in tab.folder.iterdir()} == before - gone
    assert [run.name for run in tab.runs()] == [other]


@pytest.mark.parametrize("name, message", [("", "Pick a run"), ("../out/x", "There is no run"),
                                           ("nothing", "There is no run")])
def test_a_run_that_is_not_there_is_one_sentence(outputs, name, message):
    tab = outputs()
    with pytest.raises(ValueError, match=message):
        tab.delete(name)
    update = list(tab.resume(name))[-1]
    assert message in update.progress and update.running is False


def test_a_finished_run_is_not_resumed_and_nothing_changes(outputs, picture):
    tab = outputs()
    name = _make(tab, picture, "2026-01-02T10:00:00")
    before = {p.name: p.read_bytes() for p in tab.folder.iterdir()}
    update = list(tab.resume(name))[-1]
    assert "is finished; only stopped, failed or killed runs can be resumed" in update.progress
    assert {p.name: p.read_bytes() for p in tab.folder.iterdir()} == before


def test_resume_from_the_list_finishes_a_stopped_run(outputs, tiny_models, picture, tmp_path):
    tab = outputs(session=fixed_session(tiny_models))
    request = tiny_request(picture, seconds=1.6, window=3, steps=2, seed=9)  # 4 sections of 3 latent frames
    whole = run_events(request, tiny_models, tmp_path / "whole.mp4")[-1]
    stop_after_one = lambda event, run: isinstance(event, SectionDone) and run.stop()  # noqa: E731
    stopped = run_events(request, tiny_models, tab.folder / "part.mp4", on_event=stop_after_one)[-1]
    assert stopped.stopped and stopped.sections == 1 and [r.status for r in tab.runs()] == ["stopped"]

    updates = list(tab.resume("part"))
    assert updates[-1].running is False and updates[-1].download == str(tab.folder / "part.mp4")
    assert [r.status for r in tab.runs()] == ["finished"]
    assert load_latents(tab.folder / "part.latents.safetensors").done == 4
    assert np.array_equal(mp4_info(tab.folder / "part.mp4")[1], mp4_info(whole.video)[1])


def test_extend_needs_a_finished_video(outputs, picture):
    tab = outputs()
    name = _make(tab, picture, "2026-01-02T10:00:00")
    record = tab.find(name).files
    record.write_record(record.read_record() | {"status": "stopped"})
    update = list(tab.extend(name, 2, ""))[-1]
    assert f"{name} has no finished video to extend" in update.progress


class _ExtendCalls:
    """Stands in for Extend.parts: records the start the page built and refuses, as the real one does bad input."""

    def __init__(self, message: str):
        self.calls, self.message = [], message

    def __call__(self, start):
        self.calls.append((start.path, start.seconds,
                           start.settings | {"folder": start.folder, "from_seconds": start.from_seconds}))
        raise ValueError(self.message)


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_branch_here_passes_the_players_time_to_the_run(outputs, picture, monkeypatch):
    tab = outputs()
    name = _make(tab, picture, "2026-01-02T10:00:00")
    extend = _ExtendCalls("Branch at 1.2345678 s: recorded.")
    monkeypatch.setattr(Extend, "parts", lambda start: extend(start))
    before = _files(tab.folder)
    update = list(tab.branch(name, 1.2345678, 1.5, "it turns left"))[-1]
    list(tab.extend(name, 2, ""))  # Extend: the same path, without a time
    assert extend.calls == [
        (str(tab.folder / f"{name}.mp4"), 1.5, {"prompt": "it turns left", "folder": tab.folder,
                                                "from_seconds": 1.2345678}),
        (str(tab.folder / f"{name}.mp4"), 2.0, {"prompt": None, "folder": tab.folder, "from_seconds": None})]
    assert "Branch at 1.2345678 s: recorded." in update.progress and update.running is False
    assert _files(tab.folder) == before


@pytest.mark.parametrize("at, status, message", [
    (None, "finished", "seek it to the moment to branch from"),  # no player on the page to read
    (1.0, "stopped", "has no finished video to branch from; resume it first"),
])
def test_branch_here_refuses_before_the_run_path(outputs, picture, monkeypatch, at, status, message):
    tab = outputs()
    name = _make(tab, picture, "2026-01-02T10:00:00")
    files = tab.find(name).files
    files.write_record(files.read_record() | {"status": status})
    extend = _ExtendCalls("not reached")
    monkeypatch.setattr(Extend, "parts", lambda start: extend(start))
    before = _files(tab.folder)
    update = list(tab.branch(name, at, 2, ""))[-1]
    assert message in update.progress and update.running is False
    assert extend.calls == [] and _files(tab.folder) == before


def test_a_bad_branch_time_is_one_sentence_and_writes_nothing(outputs, tiny_models, picture):

    tab = outputs(session=fixed_session(tiny_models))
    name = _make(tab, picture, "2026-01-02T10:00:00", seconds=1, steps=1)
    record = tab.find(name).record
    before = _files(tab.folder)
    # The start, the end and past it.
    for at in (0.0, record.frames / record.fps, 9.0):
        with pytest.raises(ValueError) as refused:  # the run path's own sentence, which the page must show
            begin(Extend(tab.folder / f"{name}.mp4", 1.0, folder=tab.folder, from_seconds=at))
        update = list(tab.branch(name, at, 1, ""))[-1]
        assert update.progress == idle_html(str(refused.value), error=True) and update.running is False
        assert "\n" not in str(refused.value) and _files(tab.folder) == before, at


class _BridgeCalls:
    """Stands in for Bridge.parts: records the start the page built, then gives `then(...)`'s parts or refuses."""

    def __init__(self, then=None):
        self.calls, self.then = [], then

    def __call__(self, start):
        overrides = start.settings | {"folder": start.folder}
        self.calls.append((start.first, start.second, start.seconds, overrides))
        if self.then is None:
            raise ValueError("not reached")
        return self.then(**overrides)


def test_bridge_runs_the_two_videos_into_a_new_run_followed_as_extend_is(outputs, picture, monkeypatch):
    from framepack_core.request import Request
    tab = outputs()
    first = _make(tab, picture, "2026-01-02T10:00:00", seed=1)
    second = _make(tab, picture, "2026-01-02T10:00:01", seed=2)
    made = lambda prompt, folder: FromPicture(Request.from_fields(  # noqa: E731 (a run as the real one would start)
        image=picture, model="tiny", prompt=prompt or "own", seconds=2, seed=8, resolution=128, folder=folder)).parts()
    bridge = _BridgeCalls(then=made)
    monkeypatch.setattr(Bridge, "parts", lambda start: bridge(start))
    updates = list(tab.bridge(first, second, 1.5, "it crosses over"))
    list(tab.bridge(first, second, 2, ""))  # no prompt: the first clip's own (the run path's default)
    assert bridge.calls == [
        (str(tab.folder / f"{first}.mp4"), str(tab.folder / f"{second}.mp4"), 1.5,
         {"prompt": "it crosses over", "folder": tab.folder}),
        (str(tab.folder / f"{first}.mp4"), str(tab.folder / f"{second}.mp4"), 2.0, {"prompt": None, "folder": tab.folder})]
    new = tab.handlers.last_run.files
    assert updates[0].running is True and updates[-1].running is False
    assert updates[-1].download is not None and updates[-1].download.endswith(".mp4")
    assert [run.status for run in tab.runs()] == ["finished"] * 4 and new.read_record()["settings"]["prompt"] == "own"


@pytest.mark.parametrize("pick, into, stopped, message", [
    ("", "second", None, "Pick a run in the list first."),
    ("first", "", None, "Choose the run to bridge into first."),
    ("first", "nothing", None, "There is no run 'nothing' in the outputs folder."),
    ("first", "second", "first", "{first} has no finished video to bridge from; resume it first."),
    ("first", "second", "second", "{second} has no finished video to bridge into; resume it first."),
])
def test_bridge_refuses_before_the_run_path(outputs, picture, monkeypatch, pick, into, stopped, message):
    tab = outputs()
    names = {"first": _make(tab, picture, "2026-01-02T10:00:00", seed=1),
             "second": _make(tab, picture, "2026-01-02T10:00:01", seed=2)}
    if stopped:
        files = tab.find(names[stopped]).files
        files.write_record(files.read_record() | {"status": "stopped"})
    bridge = _BridgeCalls()
    monkeypatch.setattr(Bridge, "parts", lambda start: bridge(start))
    before = _files(tab.folder)
    updates = list(tab.bridge(names.get(pick, pick), names.get(into, into), 2, ""))
    assert len(updates) == 1 and updates[0].running is False
    assert updates[0].progress == idle_html(message.format(**names), error=True)
    assert bridge.calls == [] and _files(tab.folder) == before


def test_bridge_into_lists_the_other_finished_runs(outputs, picture):
    tab = outputs()
    first = _make(tab, picture, "2026-01-02T10:00:00", seed=1, prompt="one")
    second = _make(tab, picture, "2026-01-02T10:00:01", seed=2, prompt="two")
    stopped = _make(tab, picture, "2026-01-02T10:00:02", seed=3)
    files = tab.find(stopped).files
    files.write_record(files.read_record() | {"status": "stopped"})
    assert tab.bridge_choices() == [(f"two · 01-02 10:00 · {second}", second), (f"one · 01-02 10:00 · {first}", first)]
    assert tab.bridge_choices(first) == [(f"two · 01-02 10:00 · {second}", second)]
    # Another size cannot be bridged into: it is not offered; a run without a finished video offers none.
    wide = tab.find(second).files
    wide.write_record(wide.read_record() | {"width": 320})
    assert tab.bridge_choices(first) == [] and tab.bridge_choices(stopped) == []
    # The buttons that apply: all off with nothing picked; a stopped run resumes but does not extend.
    assert not any(tab.actions("").values())
    assert tab.actions(first) == dict(remake=True, resume=False, delete=True, extend=True, branch=True, bridge=True)
    assert tab.actions(stopped) == dict(remake=True, resume=True, delete=True, extend=False, branch=False,
                                        bridge=False)


def test_a_bad_bridge_is_the_run_paths_one_sentence_and_writes_nothing(outputs, tiny_models, picture):

    tab = outputs(session=fixed_session(tiny_models))
    for name, resolution in (("small", 128), ("large", 160)):  # one section each, at two sizes
        outcome = run_events(tiny_request(picture, seconds=0.4, window=3, steps=1, resolution=resolution),
                             tiny_models, tab.folder / f"{name}.mp4")[-1]
        assert getattr(outcome, "video", outcome) == tab.folder / f"{name}.mp4"
    assert mp4_info(tab.folder / "small.mp4")[1].shape[1:] != mp4_info(tab.folder / "large.mp4")[1].shape[1:]
    before = _files(tab.folder)
    for pair, words in ((("small", "large"), "a bridge joins clips of the same size and frame rate"),
                        (("small", "small"), "A bridge joins two different clips")):
        with pytest.raises(ValueError) as refused:  # the run path's own sentence, which the page must show
            begin(Bridge(*(tab.folder / f"{name}.mp4" for name in pair), 1.0, folder=tab.folder))
        update = list(tab.bridge(*pair, 1, ""))[-1]
        assert words in str(refused.value) and "\n" not in str(refused.value)
        assert update.progress == idle_html(str(refused.value), error=True) and update.running is False
        assert _files(tab.folder) == before, pair
