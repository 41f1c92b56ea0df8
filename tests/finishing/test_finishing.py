"""Finishing runs (framepack_core/finishing): upscaling through spandrel's detection, RIFE and minterpolate
interpolation, Stop and resume with the same bytes, one sentence for bad input, through the real entry point.

Models are built here from random weights in the published layouts (tests/support/finishing_models.py) and saved as
files, then loaded as a downloaded file would be."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.finishing_models import compact_state, esrgan_state, rife_state, save
from tests.support.mp4info import mp4_info, mp4_metadata, write_clip

from framepack_core.failures import ModelsUnavailableError
from framepack_core.finishing import rife, tiles, upscalers
from framepack_core.finishing.finishing_run import FinishingRun
from framepack_core.finishing.request import FinishRequest

ROOT = Path(__file__).resolve().parents[2]
SMALL_RIFE = (32, 32, 16, 16)  # the published names and layout, narrower blocks (published: 192, 128, 96, 64)


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared by many processes: torch's own threads only fight each other over them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def place(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 160, 96, 30, 9)
    save(esrgan_state(2), tmp_path / "upscalers" / "tiny-x2.pth")
    return tmp_path, clip


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finish(request, stop_after=None):
    run = FinishingRun.start(request)
    events = []

    def emit(event):
        events.append(event)
        if stop_after is not None and getattr(event, "step", 0) == stop_after:
            run.stop()
    return run, run.execute(None, emit), events


def test_upscale_x2_keeps_count_and_rate_and_records_the_model(place):
    tmp, clip = place
    before = sha(clip)
    run, outcome, _ = finish(FinishRequest("upscale", clip, 2, model="tiny-x2", folder=tmp / "out",
                                           upscalers=tmp / "upscalers", part_frames=4))
    meta, frames = mp4_info(outcome.video)
    assert (meta["size"], meta["fps"], frames.shape) == ((320, 192), 30.0, (9, 192, 320, 3))
    record = json.loads(run.files.record.read_text())
    model = tmp / "upscalers" / "tiny-x2.pth"
    assert record["status"] == "finished" and record["applied"]["model_sha256"] == sha(model)
    assert record["applied"]["architecture"] == "ESRGAN" and record["parts"] == 2
    applied = json.loads(mp4_metadata(outcome.video)["comment"])["finishing"]
    assert applied == [record["applied"]]
    assert sha(clip) == before and not run.parts.exists() and not run.files.in_progress.exists()


@pytest.mark.parametrize("state, scale, architecture", [
    (esrgan_state(2, features=64, blocks=23), 2, "ESRGAN"),  # RealESRGAN_x2plus's layout
    (esrgan_state(4, features=64, blocks=23), 4, "ESRGAN"),  # RealESRGAN_x4plus's
    (compact_state(features=64, convs=32, scale=4), 4, "Compact"),  # realesr-general-x4v3's
])
def test_published_layouts_are_detected(tmp_path, state, scale, architecture):
    loaded = upscalers.load(save(state, tmp_path / "model.pth"))
    assert (loaded.architecture, loaded.scale) == (architecture, scale)
    frame = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    assert tiles.upscale_frame(loaded.model, frame, 64).shape == (8 * scale, 12 * scale, 3)


def test_tiles_with_overlap_equal_the_whole_frame(tmp_path):
    """Compact's receptive field is 4 pixels: with 16 of overlap, tiles of 32 give the frame in one piece exactly."""
    loaded = upscalers.load(save(compact_state(convs=2), tmp_path / "c.safetensors"))
    frame = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    whole, tiled = tiles.upscale_frame(loaded.model, frame, 512), tiles.upscale_frame(loaded.model, frame, 32)
    assert whole.shape == (280, 360, 3) and np.array_equal(whole, tiled)
    assert not np.array_equal(whole, tiles.upscale_frame(loaded.model, frame, 32, overlap=0))  # the overlap matters


def test_rife_interpolate_x2_keeps_the_source_frames(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 160, 96, 30, 6, seed=20)  # fast colour changes: in-betweens differ
    model = save(rife_state(SMALL_RIFE), tmp_path / "rife" / "flownet.pkl")
    run, outcome, _ = finish(FinishRequest("interpolate", clip, 2, folder=tmp_path / "out",
                                           rife_folder=tmp_path / "rife", part_frames=4))
    meta, frames = mp4_info(outcome.video)
    _, source = mp4_info(clip)
    assert (meta["fps"], frames.shape[0], outcome.frames) == (60.0, 11, 11)
    assert np.abs(frames[::2].astype(int) - source.astype(int)).mean() < 3  # the source's own, re-encoded
    net = rife.load(model)
    as_input = lambda f: torch.nn.functional.pad(torch.from_numpy(f.copy()).permute(2, 0, 1)[None] / 255,
                                                 (0, 256 - 160, 0, 128 - 96))  # noqa: E731
    for i in range(5):  # each new frame is the network's at t = 0.5 for its neighbours
        expected = (net(as_input(source[i]), as_input(source[i + 1]), 0.5)[0, :, :96, :160] * 255).round()
        made = torch.from_numpy(frames[2 * i + 1].copy()).permute(2, 0, 1).float()
        assert (made - expected).abs().mean() < 3 < np.abs(frames[2 * i + 1].astype(int) - source[i]).mean()
    assert run.record().applied["method"] == "rife"


def test_rife_file_with_a_missing_layer_is_refused(tmp_path):
    state = rife_state(SMALL_RIFE)
    del state["module.block2.convblock.3.beta"]
    with pytest.raises(ValueError, match=r"^flownet.pkl is not a RIFE 4.x model file"):
        rife.load(save(state, tmp_path / "flownet.pkl"))


def test_without_rife_weights_minterpolate_is_the_fallback(place):
    tmp, clip = place
    run, outcome, _ = finish(FinishRequest("interpolate", clip, 4, folder=tmp / "out", rife_folder=tmp / "none"))
    meta, frames = mp4_info(outcome.video)
    assert (meta["fps"], frames.shape[0]) == (120.0, 33)
    assert run.record().applied["method"] == "ffmpeg minterpolate"


def test_stopped_run_resumes_to_the_same_bytes(place):
    tmp, clip = place
    request = FinishRequest("upscale", clip, 2, model="tiny-x2", upscalers=tmp / "upscalers", part_frames=4)
    _, whole, _ = finish(request.__class__(**{**request.__dict__, "folder": tmp / "whole"}))
    run, stopped, _ = finish(request.__class__(**{**request.__dict__, "folder": tmp / "cut"}), stop_after=6)
    record = json.loads(run.files.record.read_text())
    assert (record["status"], record["parts_done"], record["video"]) == ("stopped", 1, None)
    assert mp4_info(run.files.in_progress)[1].shape[0] == 4  # the first part is the video so far
    clip.write_bytes(clip.read_bytes() + b"\0")  # the source changed: its parts would not match
    with pytest.raises(ValueError, match="^clip.mp4 has changed since this run began"):
        FinishingRun.resume(run.files.record)
    clip.write_bytes(clip.read_bytes()[:-1])
    resumed = FinishingRun.resume(run.files.record)
    events = []
    outcome = resumed.execute(None, events.append)
    assert [e.step for e in events if hasattr(e, "step")] == [5, 6, 7, 8, 9]  # the first part is not made again
    assert outcome.video == run.files.video and outcome.video.read_bytes() == whole.video.read_bytes()


def test_bad_input_is_one_sentence_and_writes_nothing(place, monkeypatch):
    tmp, clip = place
    (tmp / "notes.txt").write_text("not a video")
    torch.save({"weight": torch.zeros(3)}, tmp / "upscalers" / "junk.pth")
    base = dict(folder=tmp / "out", upscalers=tmp / "upscalers")
    cases = [
        (FinishRequest("upscale", tmp / "notes.txt", 2, model="tiny-x2", **base), "notes.txt is not a video"),
        (FinishRequest("upscale", clip, 2, model="junk", **base), "junk.pth is not an upscaler model spandrel knows"),
        (FinishRequest("upscale", clip, 4, model="tiny-x2", **base), "tiny-x2.pth upscales x2, not x4"),
        (FinishRequest("upscale", clip, 3, **base), "The scale is 2 or 4"),
        (FinishRequest("upscale", clip, 2, model="tiny-x2", output=clip, **base), "would replace the source"),
        (FinishRequest("upscale", clip, 4, **base), "HF_HUB_OFFLINE forbids downloading"),  # the named default
    ]
    for request, words in cases:
        with pytest.raises((ValueError, ModelsUnavailableError)) as error:
            FinishingRun.start(request)
        assert words in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(ValueError, match="^The result needs about .* GB in .*, which has 0.00 GB free"):
        FinishingRun.start(FinishRequest("upscale", clip, 2, model="tiny-x2", **base))
    assert not (tmp / "out").exists()


def test_dropped_checkpoint_is_listed(place):
    tmp, _ = place
    save(compact_state(), tmp / "upscalers" / "from-elsewhere.safetensors")
    assert upscalers.choices(tmp / "upscalers")[:2] == ["from-elsewhere.safetensors", "tiny-x2.pth"]
    assert upscalers.resolve("from-elsewhere", 4, tmp / "upscalers") == tmp / "upscalers" / "from-elsewhere.safetensors"


def app(*args, cwd, **popen):
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_fresh_process_killed_run_resumes_to_the_same_bytes(tmp_path):
    """`python app.py upscale`, SIGKILLed after its first part; `generate --resume` (the flag that resumes any run)
    in a new process ends with the bytes of a run never killed."""
    clip = write_clip(tmp_path / "clip.mp4", 160, 96, 30, 24)
    save(esrgan_state(2, features=16), tmp_path / "upscalers" / "x2.pth")
    whole = app("upscale", clip, "--scale", "2", "--model", "x2", "--part-frames", "4", "--outputs", "whole",
                cwd=tmp_path)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    killed = app("upscale", clip, "--scale", "2", "--model", "x2", "--part-frames", "4", "--outputs", "cut",
                 cwd=tmp_path)
    parts = tmp_path / "cut" / ".clip.upscaled-x2.parts"
    deadline = time.monotonic() + 120
    while not (parts / "part-00001.mp4").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    record = tmp_path / "cut" / "clip.upscaled-x2.json"
    assert json.loads(record.read_text())["status"] == "running"  # killed mid-run: its owner is gone
    assert not (tmp_path / "cut" / "clip.upscaled-x2.mp4").exists()
    wrong = app("upscale", "--resume", tmp_path / "cut" / "nothing.json", cwd=tmp_path)
    assert wrong.wait(timeout=120) == 2 and "belongs to no finishing run" in wrong.stderr.read()
    resumed = app("generate", "--resume", record, "--json", cwd=tmp_path)  # one --resume for every kind of run
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["status"], summary["frames"], summary["width"]) == ("finished", 24, 320)
    assert (tmp_path / "cut" / "clip.upscaled-x2.mp4").read_bytes() == \
        (tmp_path / "whole" / "clip.upscaled-x2.mp4").read_bytes()
    assert not parts.exists()


def test_fresh_process_bad_model_is_one_line(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 160, 96, 30, 3)
    (tmp_path / "x.pth").write_bytes(b"not a pickle")
    process = app("upscale", clip, "--model", tmp_path / "x.pth", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: x.pth could not be read as a model")
    assert not (tmp_path / "outputs").exists()


def test_queued_upscale_runs_through_the_queue(place):
    """`app.py upscale ... --queue` adds a job; `app.py queue run` makes it like any job (fresh processes)."""
    tmp, clip = place
    added = app("upscale", clip, "--scale", "2", "--model", "tiny-x2", "--queue", "--outputs", "q", cwd=tmp)
    assert added.wait(timeout=120) == 0 and added.stderr.read().strip() == "queued job 1"
    refused = app("upscale", tmp / "upscalers" / "tiny-x2.pth", "--queue", "--outputs", "q", cwd=tmp)
    assert refused.wait(timeout=120) == 2 and "is not a video" in refused.stderr.read()
    ran = app("queue", "run", "--outputs", "q", cwd=tmp)
    assert ran.wait(timeout=300) == 0, ran.stderr.read()
    from jobs.store import JobStore

    (job,) = JobStore(tmp / "q").jobs()
    assert (job.status, job.settings["finishing"]["operation"]) == ("finished", "upscale")
    meta, frames = mp4_info(tmp / "q" / job.video)
    assert (meta["size"], frames.shape[0]) == ((320, 192), 9)
    assert json.loads((tmp / "q" / f"{job.run_name}.json").read_text())["applied"]["model_file"] == "tiny-x2.pth"
