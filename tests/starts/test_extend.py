"""Extending a finished video: its frames untouched, then the new ones, in one MP4 (tiny set)."""
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from framepack_core.events import Finished
from framepack_core.media.latents import load_latents
from tests.support.helpers import fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info, mp4_metadata
from framepack_core.starts import Extend, begin

ROOT = Path(__file__).resolve().parents[2]


def extend(tiny_models, path, seconds, **overrides):
    run = begin(Extend(path, seconds, **overrides))
    outcome = run.execute(fixed_session(tiny_models), lambda event: None)
    assert isinstance(outcome, Finished) and not outcome.stopped, outcome
    return run, outcome


@pytest.mark.parametrize("mode", ["inverted", "forward"])
def test_two_seconds_made_here_extended_by_two(tiny_models, picture, tmp_path, mode):
    original = run_events(tiny_request(picture, seconds=2, steps=2, mode=mode), tiny_models, tmp_path / "two.mp4")[-1]
    assert original.frames == 73
    before = (tmp_path / "two.mp4").read_bytes()
    run, outcome = extend(tiny_models, tmp_path / "two.mp4", 2, prompt="the balloon drifts away")
    frames = mp4_info(outcome.video)[1]
    assert frames.shape[0] == outcome.frames == 145  # as many as a 4-second video
    assert np.array_equal(frames[:73], mp4_info(tmp_path / "two.mp4")[1])  # the original, bit for bit
    assert not np.array_equal(frames[73], frames[72])
    assert (tmp_path / "two.mp4").read_bytes() == before and outcome.video != tmp_path / "two.mp4"
    # The extension keeps its own latents (the source's, then its own), so it can be extended again.
    saved, source = load_latents(run.files.latents), load_latents(tmp_path / "two.latents.safetensors")
    assert saved.video.shape[2] == 19 + 18 and (saved.video[:, :, :19] == source.video).all()
    assert saved.settings["mode"] == "forward" and saved.settings["prompt"] == "the balloon drifts away"
    assert mp4_metadata(outcome.video)["title"] == "the balloon drifts away"


def _foreign_mp4(path, count=73, width=120, height=88):
    """An MP4 made by ffmpeg's own defaults through imageio-ffmpeg, not by this app: a moving gradient."""
    y, x = np.mgrid[0:height, 0:width]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=30, macro_block_size=8)
    writer.send(None)
    for t in range(count):
        frame = np.stack([(x * 2 + t * 3) % 256, (y * 2 + t) % 256, (x + y + 5 * t) % 256], axis=-1)
        writer.send(frame.astype(np.uint8))
    writer.close()
    return path


def test_an_mp4_from_elsewhere_is_extended(tiny_models, tmp_path):
    source = _foreign_mp4(tmp_path / "phone.mp4")
    original = mp4_info(source)[1]
    assert original.shape == (73, 88, 120, 3)
    run, outcome = extend(tiny_models, source, 2, prompt="the colours keep flowing", steps=2)
    frames = mp4_info(outcome.video)[1]
    assert frames.shape == (145, 88, 120, 3)
    assert np.array_equal(frames[:73], original)
    assert not run.files.latents.with_name("phone.latents.safetensors").exists()
    assert load_latents(run.files.latents).video.shape[2] == 19 + 18


def test_bad_sources_are_refused_in_one_sentence(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    for path, message in ((tmp_path / "missing.mp4", "no video"), (tmp_path / "notes.mp4", "not a video")):
        with pytest.raises(ValueError, match=message):
            begin(Extend(path, 2))
    result = subprocess.run([sys.executable, "app.py", "generate", "--extend", str(tmp_path / "missing.mp4"),
                             "--seconds", "2"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "no video" in result.stderr
    assert not any(tmp_path.glob("*.json"))
