"""Resuming a stopped or killed run gives the video of the run that never stopped (tiny set)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from framepack_core.events import Finished, SectionDone
from framepack_core.media.latents import load_latents
from tests.support.helpers import fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import Resume, begin

ROOT = Path(__file__).resolve().parents[2]
WINDOW, FIVE_SECTIONS = 3, 2.0  # round(2 * 30 / 12) = 5 sections of 3 latent frames (a small window: fast)


def _request(picture, mode, **fields):
    return tiny_request(picture, seconds=FIVE_SECTIONS, window=WINDOW, steps=2, mode=mode, seed=5, **fields)


@pytest.fixture(scope="module", params=["inverted", "forward"])
def uninterrupted(request, tiny_models, picture, tmp_path_factory):
    """The run that never stopped, per sampling order: (mode, its MP4)."""
    mode = request.param
    folder = tmp_path_factory.mktemp(f"whole-{mode}")
    whole = run_events(_request(picture, mode), tiny_models, folder / "whole.mp4")[-1]
    assert whole.sections == 5 and whole.frames == 4 * (5 * WINDOW + 1) - 3
    return mode, whole.video


def _stop_after(sections):
    return lambda event, run: isinstance(event, SectionDone) and event.section + 1 == sections and run.stop()


def test_stopped_after_two_of_five_then_resumed_is_the_uninterrupted_video(tiny_models, picture, tmp_path,
                                                                          uninterrupted):
    mode, whole = uninterrupted
    request = _request(picture, mode)
    stopped = run_events(request, tiny_models, tmp_path / "part.mp4", on_event=_stop_after(2))[-1]
    assert stopped.stopped and stopped.sections == 2
    saved = load_latents(tmp_path / "part.latents.safetensors")
    assert (saved.done, saved.sections, saved.settings["mode"], saved.settings["seed"]) == (2, 5, mode, 5)
    assert saved.video.shape[2] == (1 + 2 * WINDOW if mode == "forward" else 2 * WINDOW)

    run = begin(Resume(tmp_path / "part.mp4"))
    events = []
    outcome = run.execute(fixed_session(tiny_models), events.append)
    assert isinstance(outcome, Finished) and not outcome.stopped and outcome.sections == 5
    steps = [e for e in events if type(e).__name__ == "Step"]
    assert {e.section for e in steps} == {2, 3, 4}  # only the missing sections were sampled
    assert np.array_equal(mp4_info(outcome.video)[1], mp4_info(whole)[1])
    assert outcome.video.read_bytes() == whole.read_bytes()
    assert load_latents(tmp_path / "part.latents.safetensors").done == 5
    assert torch_equal(load_latents(tmp_path / "part.latents.safetensors").video,
                       load_latents(whole.with_name("whole.latents.safetensors")).video)


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)


def test_a_finished_run_is_not_resumed(tiny_models, picture, tmp_path):
    run_events(tiny_request(picture, steps=2), tiny_models, tmp_path / "done.mp4")
    with pytest.raises(ValueError, match="finished"):
        begin(Resume(tmp_path / "done.json"))


def test_nothing_to_resume_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="Nothing to resume"):
        begin(Resume(tmp_path / "nothing.mp4"))


_GENERATE = [sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128", "--steps", "2",
             "--seconds", str(FIVE_SECTIONS), "--window", str(WINDOW), "--seed", "5",
             "--prompt", "a red balloon rises"]


def test_killed_mid_section_then_resumed_from_the_command_line(picture, tmp_path, uninterrupted):
    mode, whole = uninterrupted
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = _GENERATE + ["--image", str(picture), "--mode", mode]
    output = tmp_path / "killed.mp4"
    latents = tmp_path / "killed.latents.safetensors"
    process = subprocess.Popen(command + ["--output", str(output)], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                               text=True)
    # Kill it once two sections are saved, as soon as the third has begun sampling.
    for line in process.stderr:
        if "section 2/5 done" in line:
            break
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (latents.exists() and load_latents(latents).done == 2):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert load_latents(latents).done == 2 and not output.exists()
    resumed = subprocess.run([sys.executable, "app.py", "generate", "--resume",
                              str(tmp_path / "killed.in-progress.mp4")], cwd=ROOT, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(mp4_info(output)[1], mp4_info(whole)[1])
    assert output.read_bytes() == whole.read_bytes()


def test_command_line_says_what_is_missing(tmp_path):
    for args, message in ((["--prompt", "p"], "Give --image and --prompt"),
                          (["--resume", str(tmp_path / "a.mp4"), "--extend", str(tmp_path / "a.mp4")], "not both"),
                          (["--resume", str(tmp_path / "a.mp4")], "Nothing to resume")):
        result = subprocess.run([sys.executable, "app.py", "generate", *args], cwd=ROOT, capture_output=True,
                                text=True)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())
