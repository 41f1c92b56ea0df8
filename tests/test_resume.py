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
from framepack_core.run import Run
from helpers import fixed_session, run_events, tiny_request
from mp4info import mp4_info

ROOT = Path(__file__).resolve().parents[1]
FIVE_SECTIONS = 6.0  # round(6 * 30 / 36) = 5 sections of 9 latent frames


def _stop_after(sections):
    return lambda event, run: isinstance(event, SectionDone) and event.section + 1 == sections and run.stop()


@pytest.mark.parametrize("mode", ["inverted", "forward"])
def test_stopped_after_two_of_five_then_resumed_is_the_uninterrupted_video(tiny_models, picture, tmp_path, mode):
    request = tiny_request(picture, seconds=FIVE_SECTIONS, steps=2, mode=mode, seed=5)
    whole = run_events(request, tiny_models, tmp_path / "whole.mp4")[-1]
    assert whole.sections == 5 and whole.frames == 181

    stopped = run_events(request, tiny_models, tmp_path / "part.mp4", on_event=_stop_after(2))[-1]
    assert stopped.stopped and stopped.sections == 2
    saved = load_latents(tmp_path / "part.latents.safetensors")
    assert (saved.done, saved.sections, saved.settings["mode"], saved.settings["seed"]) == (2, 5, mode, 5)
    assert saved.video.shape[2] == (19 if mode == "forward" else 18)

    run = Run.resume(tmp_path / "part.mp4")
    events = []
    outcome = run.execute(fixed_session(tiny_models), events.append)
    assert isinstance(outcome, Finished) and not outcome.stopped and outcome.sections == 5
    steps = [e for e in events if type(e).__name__ == "Step"]
    assert {e.section for e in steps} == {2, 3, 4}  # only the missing sections were sampled
    assert np.array_equal(mp4_info(outcome.video)[1], mp4_info(whole.video)[1])
    assert (tmp_path / "part.mp4").read_bytes() == (tmp_path / "whole.mp4").read_bytes()
    assert load_latents(tmp_path / "part.latents.safetensors").done == 5
    assert torch_equal(load_latents(tmp_path / "part.latents.safetensors").video,
                       load_latents(tmp_path / "whole.latents.safetensors").video)


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)


def test_a_finished_run_is_not_resumed(tiny_models, picture, tmp_path):
    run_events(tiny_request(picture, steps=2), tiny_models, tmp_path / "done.mp4")
    with pytest.raises(ValueError, match="finished"):
        Run.resume(tmp_path / "done.json")


def test_nothing_to_resume_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="No saved latents"):
        Run.resume(tmp_path / "nothing.mp4")


_GENERATE = [sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128", "--steps", "3",
             "--seconds", str(FIVE_SECTIONS), "--seed", "9", "--prompt", "a red balloon rises"]


@pytest.mark.parametrize("mode", ["inverted", "forward"])
def test_killed_mid_section_then_resumed_from_the_command_line(picture, tmp_path, mode):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = _GENERATE + ["--image", str(picture), "--mode", mode]
    whole = subprocess.run(command + ["--output", str(tmp_path / "whole.mp4")], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
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
    assert np.array_equal(mp4_info(output)[1], mp4_info(tmp_path / "whole.mp4")[1])
    assert output.read_bytes() == (tmp_path / "whole.mp4").read_bytes()
