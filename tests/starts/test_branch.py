"""Branching (`--extend VIDEO --from SECONDS`) on the tiny set: the new file's frames up to the cut are
the source's, bit for bit; the first new section continues from the source's latents at the cut (its
saved ones, else its frames before the cut encoded); the source is never changed; a stopped branch
resumes to the same bytes; bad times are one sentence and write nothing."""
import hashlib
import json

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from app import main
from framepack_core.events import Finished, Notice, SectionDone
from framepack_core.starts.extend import latents_before
from framepack_core.media.latents import load_latents
from framepack_core.media.video_files import cut_points
from framepack_core.models.encoders import encode_latent, encode_siglip
from tests.support.helpers import executed, fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info, write_clip
from framepack_core.starts import Extend, Resume, begin

K = 3  # latent frames per section: 12 frames


@pytest.fixture(scope="module")
def sources(tiny_models, picture, tmp_path_factory):
    """A finished 1.6 s video per sampling order (4 sections, 49 frames), made here."""
    folder = tmp_path_factory.mktemp("branch-sources")
    made = {}
    for mode in ("forward", "inverted"):
        request = tiny_request(picture, seconds=1.6, window=K, steps=1, seed=3, mode=mode, step_cache=False)
        outcome = run_events(request, tiny_models, folder / f"{mode}.mp4")[-1]
        assert isinstance(outcome, Finished) and outcome.frames == 49
        made[mode] = outcome.video
    return made


def _recording(transformer):
    seen = []

    def hook(module, args, kwargs):
        seen.append({name: kwargs[name].clone() for name in ("latents_clean", "latents_history_2x", "image_embeds")})
    return seen, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def _branch(models, source, seconds, folder, on_event=None, **fields):
    run = begin(Extend(source, 0.8, from_seconds=seconds, steps=1, folder=folder, **fields))
    return run, executed(run, models, on_event=on_event)


@pytest.mark.parametrize("mode", ["forward", "inverted"])
def test_a_branch_keeps_the_source_to_the_cut_and_continues_from_its_latents(tiny_models, sources, tmp_path, mode):
    source = sources[mode]
    before = source.read_bytes()
    points = [p for p in cut_points(source) if 0 < p < 49]
    cut = min(points, key=lambda p: abs(p - 24))  # the cut point nearest 0.8 s
    seen, handle = _recording(tiny_models.transformer)
    try:
        run, events = _branch(tiny_models, source, 0.8, tmp_path)
    finally:
        handle.remove()
    outcome = events[-1]
    assert isinstance(outcome, Finished) and outcome.sections == 2  # 0.8 s: two sections of 12 frames
    saved = load_latents(source.with_name(f"{mode}.latents.safetensors"))
    history, skip = latents_before(saved.video, cut)
    assert (history.shape[2], skip) == ((cut - 1) // 4 + 1, cut - (4 * ((cut - 1) // 4) + 1))
    if mode == "forward":
        assert skip == 3  # forward videos' segments start one frame before a latent's four: the skip is used
    frames, source_frames = mp4_info(outcome.video)[1], mp4_info(source)[1]
    assert len(frames) == cut + 2 * 4 * K - skip
    assert np.array_equal(frames[:cut], source_frames[:cut])  # bit for bit up to the cut
    assert not np.array_equal(frames[cut:cut + 4], source_frames[cut:cut + 4])  # then new frames
    assert source.read_bytes() == before
    # The first new section continues from the source's latents before the cut, and its picture.
    first = seen[0]
    dtype = tiny_models.transformer.dtype
    assert torch.equal(first["latents_clean"], torch.cat([saved.start, history[:, :, -1:]], dim=2).to(dtype))
    assert torch.equal(first["latents_history_2x"], history[:, :, -3:-1].to(dtype))
    pixels = np.asarray(Image.open(run.files.picture))
    embeds = encode_siglip(tiny_models.feature_extractor, tiny_models.image_encoder, pixels)
    assert torch.equal(first["image_embeds"], embeds.to(dtype))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert f"at {cut / 30:.2f} s (its frame {cut})" in notices[0]
    record = json.loads(run.files.record.read_text())
    assert (record["frames"], record["status"]) == (cut + 2 * 4 * K - skip, "finished")
    assert (record["branches"], record["from_seconds"]) == (source.name, round(cut / 30, 3))
    branch_latents = load_latents(run.files.latents)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()  # a resume reads only this very file (source_check)
    assert branch_latents.extends | {"video": ""} == {"video": "", "frames": cut, "latents": history.shape[2],
                                                       "cut": True, "sha256": digest}
    assert torch.equal(branch_latents.video[:, :, :history.shape[2]], history)


def test_a_stopped_branch_resumes_to_the_same_bytes(tiny_models, sources, tmp_path):
    whole, _ = _branch(tiny_models, sources["forward"], 1.0, tmp_path / "whole")
    stop = lambda event, run: isinstance(event, SectionDone) and run.stop()  # noqa: E731
    part, events = _branch(tiny_models, sources["forward"], 1.0, tmp_path / "part", on_event=stop)
    assert events[-1].stopped and events[-1].sections == 1
    resumed = begin(Resume(part.files.in_progress if part.files.in_progress.exists() else part.files.video))
    outcome = resumed.execute(fixed_session(tiny_models), lambda event: None)
    assert isinstance(outcome, Finished) and outcome.sections == 2
    assert outcome.video.read_bytes() == whole.files.video.read_bytes()


@pytest.fixture(scope="module")
def keyed_clip(tmp_path_factory):
    """A 96 x 64 MP4 from elsewhere at 30 fps, 60 frames, with a keyframe every 20 frames."""
    return write_clip(tmp_path_factory.mktemp("keyed") / "keyed.mp4", 96, 64, fps=30, frames=60,
                      output_params=["-g", "20", "-keyint_min", "20", "-sc_threshold", "0"])


def test_a_branch_of_a_video_from_elsewhere_encodes_its_frames_before_the_cut(tiny_models, keyed_clip, tmp_path):
    assert cut_points(keyed_clip) == [0, 20, 40]
    seen, handle = _recording(tiny_models.transformer)
    try:
        run, events = _branch(tiny_models, keyed_clip, 1.2, tmp_path, prompt="the colours flow", window=K)
    finally:
        handle.remove()
    outcome = events[-1]
    frames, source_frames = mp4_info(outcome.video)[1], mp4_info(keyed_clip)[1]
    assert len(frames) == 40 + 2 * 4 * K and np.array_equal(frames[:40], source_frames[:40])
    # The history is the frames before the cut, encoded: the nearest history frame is frames 36-39's latent.
    tail = torch.from_numpy(source_frames[:40][-37:].copy()).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        vae = tiny_models.vae
        encoded = vae.encode(tail.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
    start = encode_latent(vae, source_frames[0])
    expected = torch.cat([start, encoded[:, :, -1:].float()], dim=2).to(tiny_models.transformer.dtype)
    assert torch.equal(seen[0]["latents_clean"], expected)


# 0 is outside the range the message gives (issue 27, 13: it once said "between 0 and 1.63 s, not 0").
@pytest.mark.parametrize("seconds, words", [("0", "A branch starts inside forward.mp4: after 0 s and before its end at "
                                                  "1.63 s, not at 0 s."),
                                            ("1.7", "after 0 s and before its end at 1.63 s, not at 1.7 s."),
                                            (None, "--from says where to branch a video given with --extend.")])
def test_a_bad_branch_is_one_line_and_writes_nothing(sources, tmp_path, capsys, seconds, words):
    args = ["generate", "--model", "tiny", "--outputs", str(tmp_path), "--seconds", "1"]
    args += ["--extend", str(sources["forward"]), "--from", seconds] if seconds else ["--from", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_video_with_no_keyframe_near_the_time_is_encoded_again_up_to_it(tiny_models, tmp_path):
    single = tmp_path / "single.mp4"  # one group of frames: its only keyframe is its first
    writer = imageio_ffmpeg.write_frames(str(single), (96, 64), fps=30, macro_block_size=2)
    writer.send(None)
    for t in range(30):
        writer.send(np.full((64, 96, 3), 8 * t, np.uint8))
    writer.close()
    assert cut_points(single) == [0]
    run, events = _branch(tiny_models, single, 0.5, tmp_path / "out", prompt="p", window=K)
    frames, source_frames = mp4_info(events[-1].video)[1], mp4_info(single)[1]
    assert len(frames) == 15 + 2 * 4 * K  # cut at frame 15 (0.5 s) exactly, since it could not snap
    # Not bit for bit (encoded again, at the run's quality), but the same pictures.
    assert np.abs(frames[:15].astype(int) - source_frames[:15].astype(int)).max() <= 2
    assert [e.message for e in events if isinstance(e, Notice)][0] == (
        "Branching single.mp4 at 0.50 s (its frame 15): its frames before it are encoded again (it has no "
        "keyframe near that moment to cut at without re-encoding).")
