"""A killed run is never stuck: its record is marked once its process is gone, its scratch files are
cleared by the next run in the folder, and one killed before its first section starts over (tiny set)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from framepack_core.run.files import RunFiles, remove_dead_scratch
from framepack_core.run.owner import owner_alive, this_process
from tests.support.helpers import run_events, tiny_request
from framepack_core.starts import FromPicture, Resume, begin

ROOT = Path(__file__).resolve().parents[2]
_GENERATE = [sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128", "--steps", "2",
             "--seconds", "1", "--window", "3", "--seed", "5", "--prompt", "a red balloon rises"]


def _dead_owner() -> dict:
    """The owner entry of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = {"pid": child.pid, "started": round(psutil.Process(child.pid).create_time(), 3),
             "host": this_process()["host"]}
    child.wait()
    return owner


def test_owners_alive_gone_reused_and_unknown():
    assert owner_alive(this_process()) is True
    assert owner_alive(_dead_owner()) is False
    assert owner_alive(this_process() | {"started": this_process()["started"] - 3600}) is False  # pid reused
    assert owner_alive(this_process() | {"host": "another-machine"}) is None
    assert owner_alive(None) is None


def test_a_dead_runs_record_is_marked_when_read_back(tmp_path):
    files = RunFiles(tmp_path, "k")
    files.write_record({"status": "running", "settings": {}, "owner": _dead_owner(), "video": "k.mp4"})
    record = files.read_record()
    assert record["status"] == "failed" and record["interrupted"] is True and "owner" not in record
    assert "interrupted" in record["error"] and "resume" in record["error"]
    assert json.loads(files.record.read_text())["status"] == "failed"  # written back
    files.write_record({"status": "running", "owner": this_process()})
    assert files.read_record()["status"] == "running"  # a live owner's record is left alone


def _scratch(folder: Path, name: str) -> Path:
    segments = folder / f".{name}.in-progress.a1b2c3.segments"
    segments.mkdir()
    (segments / "segment-00001.mp4").write_bytes(b"x" * 100)
    (folder / f".{name}.latents.safetensors.partial").write_bytes(b"y")
    return segments


def test_scratch_of_dead_runs_is_removed_and_a_live_runs_kept(tmp_path):
    RunFiles(tmp_path, "dead").write_record({"status": "running", "owner": _dead_owner()})
    RunFiles(tmp_path, "done").write_record({"status": "finished"})
    RunFiles(tmp_path, "live").write_record({"status": "running", "owner": this_process()})
    for name in ("dead", "done", "live"):
        _scratch(tmp_path, name)
    removed = remove_dead_scratch(tmp_path)
    assert len(removed) == 4
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == [".live.in-progress.a1b2c3.segments", ".live.latents.safetensors.partial"]


def test_a_new_run_in_the_folder_clears_a_killed_runs_scratch(tiny_models, picture, tmp_path):
    RunFiles(tmp_path, "killed").write_record({"status": "running", "owner": _dead_owner()})
    _scratch(tmp_path, "killed")
    run_events(tiny_request(picture, steps=1, window=3), tiny_models, tmp_path / "next.mp4")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_killed_while_loading_then_resumed_starts_over_under_the_same_name(tiny_models, picture, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    output = tmp_path / "k.mp4"
    process = subprocess.Popen(_GENERATE + ["--image", str(picture), "--output", str(output)], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "Loading the tiny models" in line:
            break
    os.kill(process.pid, signal.SIGKILL)  # (the test's own child; the app never sends signals)
    process.wait()
    files = RunFiles(tmp_path, "k")
    raw = json.loads(files.record.read_text())
    assert raw["status"] == "running" and raw["owner"]["pid"] == process.pid
    assert not files.latents.exists() and files.picture.exists()
    (tmp_path / ".k.in-progress.dead01.segments").mkdir()  # as a kill mid-section leaves it

    resumed = subprocess.run([sys.executable, "app.py", "generate", "--resume", str(output), "--json"], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads(files.record.read_text())
    assert record["status"] == "finished" and record["frames"] == 25 and "owner" not in record
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # The video the run would have made had it never been killed.
    whole = run_events(tiny_request(picture, seconds=1.0, window=3, steps=2, seed=5), tiny_models,
                       tmp_path / "whole.mp4")[-1]
    assert output.read_bytes() == whole.video.read_bytes()


def test_a_run_still_going_elsewhere_is_not_resumed(tmp_path, picture):
    files = RunFiles(tmp_path, "busy")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": holder.pid, "started": round(psutil.Process(holder.pid).create_time(), 3),
                 "host": this_process()["host"]}
        files.write_record({"status": "running", "owner": owner, "settings": {}})
        with pytest.raises(ValueError, match="still being made"):
            begin(Resume(files.video))
    finally:
        holder.kill()
        holder.wait()


def test_nothing_at_all_to_resume_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="Nothing to resume for 'nothing'"):
        begin(Resume(tmp_path / "nothing.mp4"))


def test_a_restarted_page_resumes_the_run_killed_before_it(tiny_models, picture, tmp_path):
    from ui.handlers import Handlers, ServerSettings
    from ui.outputs import OutputsHandlers
    from ui.worker import Worker

    from tests.support.helpers import fixed_session

    run = begin(FromPicture(tiny_request(picture, steps=1, window=3, folder=tmp_path)))  # then killed while loading
    files = run.files
    files.write_record(run.record().to_json() | {"owner": _dead_owner()})
    handlers = Handlers(Worker(session=fixed_session(tiny_models)), ServerSettings("tiny", 128, tmp_path))
    # The Generate tab's Resume is only for its own page's runs: a run from before the restart is not this
    # page's, so it says where to go; the Outputs tab's Resume takes the killed run by name.
    assert "pick one in the Outputs tab" in list(handlers.page_resume())[-1].refused
    final = list(OutputsHandlers(handlers).resume(files.name))[-1]
    assert final.download == str(files.video) and files.read_record()["status"] == "finished"
    assert files.read_record()["frames"] == 25
