"""The run's record is one dataclass (run/record.py's RunRecord; a finishing run's: FinishingRecord): what it
writes is byte for byte what runs wrote before it was a type, for each kind of start and outcome (GOLDEN was
written by the code before, at e7eef49), and records of every age read back as their readers read them then."""
import json
import subprocess
import sys
from dataclasses import fields
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
from PIL import Image

from framepack_core.events import Failed, Finished, Status
from framepack_core.finishing import finishing_run
from framepack_core.finishing.request import FinishRequest
from framepack_core.media.video_files import VideoFacts
from framepack_core.request import Request, remake_fields
from framepack_core.run import lifecycle
from framepack_core.run.files import RunFiles, read_any
from framepack_core.run.owner import this_process
from framepack_core.run.record import FinishingRecord, NotARecord, RunRecord, StepCacheUse, record_of
from framepack_core.settings import SETTINGS_LIST

# Written by Run.record() and FinishingRun.record() at e7eef49, before the record was a type (TMP: the test's folder).
GOLDEN = {
    "finished": (
        '{"app": "FramePack desktop", "created": "2026-12-07T10:11:12", "model": "tiny", '
        '"input": "finished.png", "input_name": "p.png", "end_frame": "finished.end.png", '
        '"keyframe_pictures": ["finished.key1.png"], "video": "finished.mp4", '
        '"settings": {"prompt": "a red balloon rises", "seed": 7, "mode": "inverted"}, "status": "finished", '
        '"frames": 37, "fps": 30, "sections": 2, "width": 128, "height": 96, "seed": 7, '
        '"seconds_elapsed": 12.346, "stopped": false, "attention_used": "sdpa", "vae_tiling_used": false, '
        '"fp8_used": "off", "step_cache": {"enabled": true, "method": "magcache", "threshold": 0.15, '
        '"blocks_computed": 30, "blocks_skipped": 10, "speedup": 1.333}, '
        '"finishing": [{"operation": "upscale", "factor": 2, "status": "finished", "video": "y.mp4"}], '
        '"stages": [{"stage": "loading", "seconds": 1.5, "vram_peak_allocated": null}, {"stage": "sampling", '
        '"seconds": 9.25}]}'),
    "branched-stopped": (
        '{"app": "FramePack desktop", "created": "2026-12-07T10:11:12", "model": "tiny", '
        '"input": "branched-stopped.png", "input_name": "p.png", "end_frame": null, "keyframe_pictures": [], '
        '"video": "branched-stopped.mp4", "settings": {"prompt": "a red balloon rises", "seed": 7, '
        '"mode": "forward"}, "status": "stopped", "branches": "a.mp4", "from_seconds": 1.5, '
        '"continues": {"video": "/src/a.mp4", "frames": 45, "sha256": "5a", "new_frames": 20, "cut": true}, '
        '"frames": 37, "fps": 30, "sections": 2, "width": 128, "height": 96, "seed": 7, '
        '"seconds_elapsed": 12.346, "stopped": true, "attention_used": "sdpa", "vae_tiling_used": false, '
        '"fp8_used": "off", "step_cache": {"enabled": false}, "stages": [{"stage": "loading", "seconds": 1.5, '
        '"vram_peak_allocated": null}, {"stage": "sampling", "seconds": 9.25}]}'),
    "bridged-running": (
        '{"app": "FramePack desktop", "created": "2026-12-07T10:11:12", "model": "tiny", '
        '"input": "bridged-running.png", "input_name": "p.png", "end_frame": null, "keyframe_pictures": [], '
        '"video": "bridged-running.mp4", "settings": {"prompt": "a red balloon rises", "seed": 7, '
        '"mode": "inverted"}, "status": "running", "bridges": ["a.mp4", "b.mp4"], '
        '"continues": {"bridge": ["/src/a.mp4", "/src/b.mp4"], "bridge_sha256": ["5a", "5b"]}, '
        '"owner": {"pid": 4242, "started": 1700000000.125, "host": "golden"}, "stages": []}'),
    "extended-failed": (
        '{"app": "FramePack desktop", "created": "2026-12-07T10:11:12", "model": "tiny", '
        '"input": "extended-failed.png", "input_name": "p.png", "end_frame": null, "keyframe_pictures": [], '
        '"video": null, "settings": {"prompt": "a red balloon rises", "seed": 7, "mode": "forward"}, '
        '"status": "failed", "extends": "a.mp4", "error": "Disk full.", "partial_video": "p.in-progress.mp4", '
        '"stages": [{"stage": "loading", "seconds": 1.5, "vram_peak_allocated": null}, {"stage": "sampling", '
        '"seconds": 9.25}]}'),
    "interpolated": (
        '{"app": "FramePack desktop", "kind": "finishing", "created": "2026-12-07T10:11:12", '
        '"operation": "interpolate", "source": "TMP/a.mp4", "source_sha256": "5a", "source_frames": 73, '
        '"request": {"operation": "interpolate", "source": "TMP/a.mp4", "factor": 2, "model": null, '
        '"folder": "TMP", "output": null, "tile": null, "crf": 16, "part_frames": 30, '
        '"upscalers": "upscalers", "rife_folder": "rife"}, "applied": {"operation": "interpolate", '
        '"factor": 2, "method": "ffmpeg minterpolate"}, "video": null, "frames": 145, "fps": 60.0, '
        '"width": 640, "height": 480, "parts": 1, "parts_done": 1, "status": "stopped", '
        '"seconds_elapsed": 12.346, "stopped": true, "partial_video": "i.mp4"}'),
}


OWNER = {"pid": 4242, "started": 1700000000.125, "host": "golden"}
STAGES = [{"stage": "loading", "seconds": 1.5, "vram_peak_allocated": None}, {"stage": "sampling", "seconds": 9.25}]


def _origin(described: dict, restarts: dict):
    """A start as the run's record sees it: what it says of where the video comes from, and how it starts over."""
    return SimpleNamespace(described=lambda: described, restarts=lambda: restarts)


def _finished(folder, **changes) -> Finished:
    made = dict(video=folder / "x.mp4", frames=37, fps=30, sections=2, width=128, height=96, seed=7,
                seconds_elapsed=12.34567, stopped=False, attention="sdpa", vae_tiling=False, fp8="off",
                step_cache="magcache", blocks_computed=30, blocks_skipped=10)
    return Finished(**(made | changes))


@pytest.fixture
def write(tmp_path, monkeypatch):
    """write(name, origin, outcome, finishing, **request fields): a run's record as Run.record() makes it, with a
    fixed time, owner and settings (the settings are the settings table's business, pinned elsewhere)."""
    picture = tmp_path / "p.png"
    Image.fromarray(np.full((96, 128, 3), 120, np.uint8)).save(picture)
    monkeypatch.setattr(lifecycle, "this_process", lambda: OWNER)
    monkeypatch.setattr(finishing_run, "this_process", lambda: OWNER)
    monkeypatch.setattr(Request, "settings", lambda self: {"prompt": "a red balloon rises", "seed": 7,
                                                           "mode": self.method.mode})

    def written(name, origin=_origin({}, {}), outcome=None, finishing=(), **fields_):
        base = dict(image=picture, model="tiny", prompt="a red balloon rises", seconds=1, steps=3, resolution=128,
                    seed=7)
        run = lifecycle.Run(Request.from_fields(**(base | fields_)).validated(), RunFiles(tmp_path, name), origin)
        run.created, run.outcome, run.finishing = "2026-12-07T10:11:12", outcome, list(finishing)
        run.stages = STAGES if outcome is not None else []
        run.files.write_record(run.record().to_json())
        return run.files.record
    return written


def _golden(name: str, tmp_path) -> bytes:
    value = json.loads(GOLDEN[name].replace("TMP", str(tmp_path)))
    return (json.dumps(value, indent=2) + "\n").encode()


def _records(write, tmp_path) -> dict:
    """Each kind of start and outcome, written; {name: path}."""
    out = {
        "finished": write("finished", outcome=_finished(tmp_path), end_image=tmp_path / "p.png", upscale=2,
                          keyframes=[(tmp_path / "p.png", 0.5, 1.0)],
                          finishing=[{"operation": "upscale", "factor": 2, "status": "finished", "video": "y.mp4"}]),
        "branched-stopped": write(
            "branched-stopped", _origin({"branches": "a.mp4", "from_seconds": 1.5},
                                        {"video": "/src/a.mp4", "frames": 45, "sha256": "5a", "new_frames": 20,
                                         "cut": True}),
            _finished(tmp_path, stopped=True, step_cache="", blocks_computed=0, blocks_skipped=0), mode="forward"),
        "bridged-running": write(
            "bridged-running", _origin({"bridges": ["a.mp4", "b.mp4"]},
                                       {"bridge": ["/src/a.mp4", "/src/b.mp4"], "bridge_sha256": ["5a", "5b"]})),
        "extended-failed": write("extended-failed", _origin({"extends": "a.mp4"}, {}),
                                 Failed("Disk full.", partial_video=tmp_path / "p.in-progress.mp4"), mode="forward"),
    }
    (tmp_path / "a.mp4").write_bytes(b"a" * 100)
    run = finishing_run.FinishingRun(FinishRequest("interpolate", tmp_path / "a.mp4", 2, folder=tmp_path),
                                     VideoFacts(73, 640, 480, 30.0, "h264", "High", "yuv420p"),
                                     RunFiles(tmp_path, "interpolated"), None, created="2026-12-07T10:11:12")
    run.outcome = _finished(tmp_path, video=tmp_path / "i.mp4", stopped=True)
    run.parts_done, run.source_sha256 = 1, "5a"
    run.files.write_record(run.record().to_json())
    return out | {"interpolated": run.files.record}


def test_records_are_written_byte_for_byte_as_before_they_were_a_type(write, tmp_path):
    records = _records(write, tmp_path)
    assert sorted(records) == sorted(GOLDEN)
    for name, path in records.items():
        assert path.read_bytes() == _golden(name, tmp_path), name
        record = read_any(path)  # and read back, it writes the same bytes again
        assert type(record) is (FinishingRecord if name == "interpolated" else RunRecord)
        assert (json.dumps(record.to_json(), indent=2) + "\n").encode() == path.read_bytes(), name


def test_readers_read_the_fields_and_the_start_part_as_attributes(write, tmp_path):
    records = {name: read_any(path) for name, path in _records(write, tmp_path).items()}
    finished, branched = records["finished"], records["branched-stopped"]
    assert finished.status is Status.FINISHED and finished.frames == 37 and finished.fps == 30
    assert finished.keyframe_pictures == ("finished.key1.png",) and finished.end_frame == "finished.end.png"
    assert finished.step_cache == StepCacheUse(True, "magcache", 0.15, 30, 10, 1.333) and finished.continued == ()
    assert branched.branches == "a.mp4" and branched.from_seconds == 1.5 and branched.continued == ("a.mp4",)
    assert branched.continues["cut"] is True and branched.step_cache == StepCacheUse(False)
    bridged = records["bridged-running"]
    assert bridged.bridges == ("a.mp4", "b.mp4") and bridged.owner == OWNER and bridged.status is Status.RUNNING
    failed = records["extended-failed"]
    assert (failed.extends, failed.error, failed.video, failed.frames) == ("a.mp4", "Disk full.", None, None)
    finishing = records["interpolated"]
    assert (finishing.operation, finishing.parts_done, finishing.status) == ("interpolate", 1, Status.STOPPED)
    assert finishing.continued == ("a.mp4",)


def test_an_older_record_reads_as_its_readers_read_it_then():
    """Before `*_used`, `stages`, `keyframe_pictures` and the step cache's breakdown: what was used by its
    setting's name at the top level, the step cache as true/false."""
    old = {"app": "FramePack desktop", "created": "2026-11-25T09:00:00", "model": "tiny", "input": "o.png",
           "input_name": "me.png", "end_frame": None, "video": "o.mp4", "status": "finished", "frames": 37,
           "fps": 30, "sections": 2, "width": 128, "height": 96, "seed": 7, "seconds_elapsed": 3.5,
           "attention": "sdpa", "vae_tiling": False, "fp8": True, "step_cache": True,
           "settings": {"prompt": "p", "seed": 7, "seconds": 1, "steps": 3, "attention": "auto", "fp8": True}}
    record = RunRecord.from_json(old)
    assert (record.attention_used, record.vae_tiling_used, record.fp8_used) == ("sdpa", False, True)
    assert record.stages == () and record.keyframe_pictures == () and record.step_cache == StepCacheUse(True)
    assert remake_fields(record.to_json()) == remake_fields(old)  # a remake asks for what the run used


def test_what_is_not_a_generations_record_is_refused_with_the_checks_words():
    good = {"app": "FramePack desktop", "settings": {"prompt": "p"}, "status": "finished"}
    for value, words in [({"app": "x", "settings": []}, "it is not a run's record (no app and settings)"),
                         (good | {"frames": "10"}, "its 'frames' is a str"),
                         (good | {"bridges": [1, 2]}, "its 'bridges' are not file names"),
                         (good | {"settings": {"seed": "7"}}, "its setting 'seed' is a str"),
                         (good | {"version": 2}, "it is a record of a later version (2)"),
                         ({"app": "x", "kind": "finishing", "request": {}, "applied": {}},
                          "it is the record of an upscale or interpolation, not of a generation"),
                         ([], "it is not a JSON object")]:
        with pytest.raises(NotARecord, match=words.replace("(", r"\(").replace(")", r"\)")):
            RunRecord.from_json(value)
    assert isinstance(record_of({"app": "x", "kind": "finishing", "request": {}, "applied": {}}), FinishingRecord)
    odd = RunRecord.from_json(good | {"finishing": 5, "status": "paused", "version": 1})  # tolerated as today
    assert odd.finishing == () and odd.status == "paused"


def test_a_killed_runs_record_reads_failed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = {"pid": child.pid, "started": round(psutil.Process(child.pid).create_time(), 3),
             "host": this_process()["host"]}
    child.wait()
    files = RunFiles(tmp_path, "k")
    files.write_record(RunRecord(settings={"prompt": "p"}, status=Status.RUNNING, video="k.mp4", owner=owner).to_json())
    record = read_any(tmp_path / "k.mp4")
    assert (record.status, record.owner, record.video, record.interrupted) == (Status.FAILED, None, None, True)
    assert record.error.startswith("The run was interrupted")


def test_what_a_run_used_has_a_field_for_each_setting_that_records_it():
    assert {s.used for s in SETTINGS_LIST if s.used} <= {f.name for f in fields(RunRecord)}
