"""Bridging two clips (`--bridge A B --seconds N`) on the tiny set: the new file is A, the bridge, then B,
with A's and B's frames bit for bit; the transformer starts from A's last latent frame (saved, else
encoded) and aims at B's first (saved, else encoded) with A's last frame as the picture; a stopped
bridge resumes to the same bytes; bad input is one sentence and writes nothing."""
import hashlib
import json

import numpy as np
import pytest
import torch

from app import main
from framepack_core.events import Finished, SectionDone
from framepack_core.media.latents import load_latents
from framepack_core.models.encoders import encode_latent, encode_siglip
from tests.support.helpers import executed, fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info, write_clip
from framepack_core.starts import Bridge, Resume, begin

K = 3  # latent frames per section: 12 frames


@pytest.fixture(scope="module")
def clips(tiny_models, picture, tmp_path_factory):
    """Two finished 0.8 s videos made here from the same picture (2 sections, 25 frames each)."""
    folder = tmp_path_factory.mktemp("bridge-clips")
    made = []
    for mode, seed in (("inverted", 11), ("forward", 12)):
        request = tiny_request(picture, seconds=0.8, window=K, steps=1, seed=seed, mode=mode, step_cache=False)
        outcome = run_events(request, tiny_models, folder / f"{mode}.mp4")[-1]
        assert isinstance(outcome, Finished) and outcome.frames == 25
        made.append(outcome.video)
    return made


def _recording(transformer):
    seen = []

    def hook(module, args, kwargs):
        seen.append({"clean": kwargs["latents_clean"].clone(), "image": kwargs["image_embeds"].clone()})
    return seen, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def _bridge(models, first, second, folder, on_event=None, **fields):
    run = begin(Bridge(first, second, 0.8, steps=1, folder=folder, **fields))
    return run, executed(run, models, on_event=on_event)


def test_a_bridge_is_a_then_the_way_from_its_end_into_b_then_b(tiny_models, clips, tmp_path):
    a, b = clips
    untouched = a.read_bytes(), b.read_bytes()
    seen, handle = _recording(tiny_models.transformer)
    try:
        run, events = _bridge(tiny_models, a, b, tmp_path)
    finally:
        handle.remove()
    outcome = events[-1]
    assert isinstance(outcome, Finished) and outcome.sections == 2
    frames, a_frames, b_frames = (mp4_info(path)[1] for path in (outcome.video, a, b))
    assert len(frames) == 25 + 2 * 4 * K + 25  # the bridge: 2 sections, less the start latent's frame (A's own)
    assert np.array_equal(frames[:25], a_frames) and np.array_equal(frames[-25:], b_frames)
    assert (a.read_bytes(), b.read_bytes()) == untouched
    # What the transformer receives: A's last latent as the start, B's first as the end frame, A's last frame
    # as the picture, in each section (generation order: the section nearest B first).
    start = load_latents(a.with_name("inverted.latents.safetensors")).video[:, :, -1:]
    end = load_latents(b.with_name("forward.latents.safetensors")).video[:, :, :1]
    saved = load_latents(run.files.latents)
    assert torch.equal(saved.start, start) and torch.equal(saved.end, end)
    assert saved.extends == {"bridge": [str(a.resolve()), str(b.resolve())],
                             "bridge_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]}
    dtype = tiny_models.transformer.dtype
    embeds = encode_siglip(tiny_models.feature_extractor, tiny_models.image_encoder, a_frames[-1])
    assert len(seen) == 2  # two sections of one step, one call a step (no CFG)
    assert torch.equal(seen[0]["clean"], torch.cat([start, end], dim=2).to(dtype))  # pre: A's end, post: B's start
    # the earlier section: pre still A's end, post the first frame the later section made
    assert torch.equal(seen[1]["clean"], torch.cat([start, saved.video[:, :, 1 + K:2 + K]], dim=2).to(dtype))
    assert all(torch.equal(call["image"], embeds.to(dtype)) for call in seen)
    record = json.loads(run.files.record.read_text())
    assert (record["frames"], record["status"], record["settings"]["mode"]) == (74, "finished", "inverted")
    assert record["bridges"] == ["inverted.mp4", "forward.mp4"]


def _foreign(path, seed, size=(96, 64), codec="libx264"):
    return write_clip(path, *size, fps=30, frames=30, seed=seed, codec=codec)


def test_clips_from_elsewhere_are_encoded_at_their_ends(tiny_models, tmp_path):
    a, b = _foreign(tmp_path / "a.mp4", 3), _foreign(tmp_path / "b.mp4", 5)
    seen, handle = _recording(tiny_models.transformer)
    try:
        run, events = _bridge(tiny_models, a, b, tmp_path / "out", prompt="colours", window=K)
    finally:
        handle.remove()
    frames, a_frames, b_frames = (mp4_info(path)[1] for path in (events[-1].video, a, b))
    assert len(frames) == 30 + 2 * 4 * K + 30
    assert np.array_equal(frames[:30], a_frames) and np.array_equal(frames[-30:], b_frames)
    vae = tiny_models.vae
    start, end = encode_latent(vae, a_frames[-1]), encode_latent(vae, b_frames[0])
    assert torch.equal(seen[0]["clean"], torch.cat([start, end], dim=2).to(tiny_models.transformer.dtype))


def test_a_stopped_bridge_resumes_to_the_same_bytes(tiny_models, clips, tmp_path):
    whole, _ = _bridge(tiny_models, *clips, tmp_path / "whole")
    stop = lambda event, run: isinstance(event, SectionDone) and run.stop()  # noqa: E731
    part, events = _bridge(tiny_models, *clips, tmp_path / "part", on_event=stop)
    assert events[-1].stopped and events[-1].sections == 1
    outcome = begin(Resume(part.files.video)).execute(fixed_session(tiny_models), lambda event: None)
    assert isinstance(outcome, Finished) and outcome.sections == 2
    assert outcome.video.read_bytes() == whole.files.video.read_bytes()


def test_bad_bridges_are_one_line_and_write_nothing(clips, tmp_path, capsys):
    a, b = clips
    mpeg4 = _foreign(tmp_path / "old.mp4", 3, codec="mpeg4")
    wide = _foreign(tmp_path / "wide.mp4", 3, size=(160, 96))  # the clips are 144 x 112
    out = tmp_path / "out"
    cases = [([str(mpeg4), str(b)], "old.mp4 is mpeg4"),
             ([str(a), str(wide)], "a bridge joins clips of the same size and frame rate"),
             ([str(a), str(a)], "A bridge joins two different clips"),
             ([str(a), str(tmp_path / "none.mp4")], "There is no video at")]
    for pair, words in cases:
        assert main(["generate", "--model", "tiny", "--outputs", str(out), "--seconds", "1", "--bridge", *pair]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert main(["generate", "--model", "tiny", "--outputs", str(out), "--bridge", str(a), str(b),
                 "--extend", str(a)]) == 2
    assert capsys.readouterr().err.strip() == "error: Give one of --extend, --bridge, not both."
    assert not out.exists()


def test_a_bridge_is_the_whole_sections_nearest_the_seconds_at_the_clips_rate():
    from framepack_core.starts.bridge import bridge_seconds
    # (seconds asked, clips' fps, window) -> the request's seconds (sections x 4 x window frames at 30 fps)
    assert bridge_seconds(1, 24, 9) == 36 / 30  # 24 frames asked: one section of 36 (1.5 s at 24 fps)
    assert bridge_seconds(3, 24, 9) == 72 / 30  # 72 frames: two sections, exactly 3 s at 24 fps
    assert bridge_seconds(0.8, 30, 3) == 0.8 and bridge_seconds(0.1, 30, 9) == 36 / 30  # at least one section
    with pytest.raises(ValueError, match="A bridge lasts more than 0 seconds, not 0."):
        bridge_seconds(0, 30, 9)


def test_a_bridge_made_here_is_a_clip_from_elsewhere_at_its_ends(tiny_models, clips, tmp_path):
    """Its latents are only its middle: bridging from it (or branching it) must use its frames."""
    from framepack_core.starts.continued import own_latents

    run, events = _bridge(tiny_models, *clips, tmp_path)
    assert load_latents(run.files.latents).complete
    assert own_latents(run.files.video) is None and own_latents(run.files.video, from_start=True) is None
    assert own_latents(clips[0]) is not None  # a video from a picture: its latents end where it ends
