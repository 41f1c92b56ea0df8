"""A big clip not made here is worked at the run's resolution bucket, its shape kept, never at its own size
(a 4K or phone clip would cost gigabytes): the transformer sees latents of that area, and the new frames
are scaled back to the clip's size to join its stream (tiny set, --resolution 128)."""
import json

import numpy as np
import pytest

from framepack_core.events import Finished
from tests.support.helpers import fixed_session
from tests.support.mp4info import mp4_info, write_clip
from framepack_core.starts import Bridge, Extend, begin


def test_the_working_size_is_the_clips_own_up_to_the_runs_bucket():
    from framepack_core.starts.continued import working_size

    assert working_size(170, 100, 640) == (176, 96)  # small: its own size, each side to 16
    assert working_size(4096, 2160, 640) == (880, 464)  # big: about 640 x 640 pixels, its shape kept
    assert working_size(1920, 1080, 640) == (848, 480)
    assert working_size(512, 288, 128) == (176, 96)


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory):
    """A 512 x 288 clip from elsewhere, 30 frames at 30 fps: bigger than the 128 bucket's area."""
    return write_clip(tmp_path_factory.mktemp("big") / "big.mp4", 512, 288, fps=30, frames=30)


def _latent_sizes(transformer, seen):
    return transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["hidden_states"].shape[-2:])), with_kwargs=True)


@pytest.mark.parametrize("how", ["extend", "bridge"])
def test_a_big_clip_runs_at_the_runs_resolution(how, tiny_models, big_clip, tmp_path):
    seen = []
    handle = _latent_sizes(tiny_models.transformer, seen)
    try:
        if how == "extend":
            run = begin(Extend(big_clip, 0.4, prompt="more", steps=1, window=3, resolution=128, folder=tmp_path))
        else:
            other = write_clip(tmp_path / "other.mp4", 512, 288, fps=30, frames=30, seed=4)
            run = begin(Bridge(big_clip, other, 0.4, prompt="between", steps=1, window=3, resolution=128, folder=tmp_path))
        outcome = run.execute(fixed_session(tiny_models), lambda event: None)
    finally:
        handle.remove()
    assert isinstance(outcome, Finished) and not outcome.stopped
    assert seen and set(seen) == {(96 // 8, 176 // 8)}  # 176 x 96, not 512 x 288 (36 x 64 latents)
    frames = mp4_info(outcome.video)[1]
    assert frames.shape == (30 + 12 + (30 if how == "bridge" else 0), 288, 512, 3)
    assert np.array_equal(frames[:30], mp4_info(big_clip)[1])
    record = json.loads(run.files.record.read_text())
    assert (record["settings"]["resolution"], record["width"], record["height"]) == (128, 512, 288)
