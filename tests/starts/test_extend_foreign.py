"""Extending a video not made here is described truthfully: its real size, frame rate and frame count, N
seconds at its own rate, and a prompt required (tiny set)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framepack_core.events import Finished
from tests.support.helpers import fixed_session
from tests.support.mp4info import mp4_info, write_clip
from framepack_core.starts import Extend, begin

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def phone_clip(tmp_path_factory):
    """A 170 x 100 MP4 at 24 fps, two seconds (48 frames), made by ffmpeg's defaults: a moving gradient."""
    return write_clip(tmp_path_factory.mktemp("foreign") / "clip24.mp4", 170, 100, fps=24, frames=48)


def test_a_24fps_170x100_clip_extended_by_one_second(tiny_models, phone_clip, tmp_path):
    run = begin(Extend(phone_clip, 1, prompt="the colours keep flowing", steps=1, window=3, folder=tmp_path))
    outcome = run.execute(fixed_session(tiny_models), lambda event: None)
    assert isinstance(outcome, Finished) and not outcome.stopped
    frames = mp4_info(outcome.video)[1]
    assert frames.shape == (48 + 24, 100, 170, 3)  # one second at 24 fps: 24 frames, not a 36-frame section
    assert np.array_equal(frames[:48], mp4_info(phone_clip)[1])
    record = json.loads(run.files.record.read_text())
    assert (record["width"], record["height"], record["fps"], record["frames"]) == (170, 100, 24, 72)
    assert record["settings"]["resolution"] == 130  # the working size 176 x 96 as a bucket, not 640
    assert (outcome.width, outcome.height, outcome.fps) == (170, 100, 24)


def test_a_clip_not_made_here_needs_a_prompt(phone_clip, tmp_path):
    with pytest.raises(ValueError, match="not made here.*--prompt"):
        begin(Extend(phone_clip, 1, folder=tmp_path))
    result = subprocess.run([sys.executable, "app.py", "generate", "--extend", str(phone_clip), "--seconds", "1",
                             "--outputs", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "clip24.mp4 was not made here" in result.stderr
    assert not any(tmp_path.iterdir())


def test_timed_prompts_of_an_extension_count_from_the_new_part(phone_clip, tmp_path):
    with pytest.raises(ValueError) as error:
        begin(Extend(phone_clip, 1, prompt="[0s: a] [1.5s: b]", window=3, folder=tmp_path))
    assert "past the new part's end" in str(error.value) and "begins at 2.00s of the whole video" in str(error.value)
