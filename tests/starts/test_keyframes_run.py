"""Keyframes and loops through the run path on the tiny set: the real transformer receives, per section, the
clean latents and image embedding that method/keyframes.py's note names; resuming keeps the keyframes;
the record and the MP4 keep them; bad keyframes are one sentence and write nothing."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from framepack_core.events import Failed, Finished, SectionDone
from framepack_core.media.latents import load_latents
from framepack_core.media.pictures import crop_to_bucket, resize_and_center_crop
from framepack_core.models.encoders import encode_latent, encode_siglip
from tests.support.helpers import fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info, mp4_metadata
from framepack_core.starts import Resume, begin

K, SECTIONS = 3, 4  # 1.6 s: 4 sections of 3 latent frames, edges every 0.4 s


@pytest.fixture(scope="module")
def keyframe_pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    paths = []
    for seed in (7, 8):
        path = folder / f"key{seed}.png"
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _request(picture, **fields):
    return tiny_request(picture, **(dict(seconds=1.6, window=K, steps=2, seed=4, step_cache=False) | fields))


def _recording(transformer):
    seen = []

    def hook(module, args, kwargs):
        seen.append({"clean": kwargs["latents_clean"].clone(), "image": kwargs["image_embeds"].clone()})
    return seen, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def _encoded(models, picture, others):
    pixels = crop_to_bucket(Image.open(picture), 128)
    height, width = pixels.shape[:2]
    crops = [resize_and_center_crop(Image.open(p), width, height) for p in others]
    latents = [encode_latent(models.vae, p) for p in [pixels, *crops]]
    embeds = [encode_siglip(models.feature_extractor, models.image_encoder, p) for p in [pixels, *crops]]
    return latents, embeds


def test_the_transformer_receives_what_the_note_says(tiny_models, picture, keyframe_pictures, tmp_path):
    a, b = keyframe_pictures
    keyframes = [(a, 0.8, 1.0), (str(b), 1.3, 0.5)]  # 0.8 s: on edge 2; 1.3 s: inside section 3, snaps to edge 3
    seen, handle = _recording(tiny_models.transformer)
    try:
        events = run_events(_request(picture, keyframes=keyframes), tiny_models, tmp_path / "keys.mp4")
    finally:
        handle.remove()
    assert isinstance(events[-1], Finished) and events[-1].frames == 49
    (start, kf0, kf1), (s_emb, e0, e1) = _encoded(tiny_models, picture, [a, b])
    video = load_latents(tmp_path / "keys.latents.safetensors").video
    later = [torch.zeros_like(start)] + [video[:, :, 1 + (SECTIONS - g) * K][:, :, None] for g in range(1, 4)]
    expected = [  # generation order: (pre, post, image embedding); no end frame, so g = 0's post stays zeros
        (0.5 * start + 0.5 * kf1, later[0], s_emb + 0.5 * (e1 - s_emb)),
        (0 * start + kf0, 0.5 * later[1] + 0.5 * kf1, s_emb + (1.0 * (e0 - s_emb) + 0.5 * (e1 - s_emb)) / 2),
        (start, 0 * later[2] + kf0, s_emb + 1.0 * (e0 - s_emb)),
        (start, later[3], s_emb)]
    dtype = tiny_models.transformer.dtype
    assert len(seen) == SECTIONS * 2
    for g, (pre, post, image) in enumerate(expected):
        for call in seen[2 * g: 2 * g + 2]:
            assert torch.equal(call["clean"], torch.cat([pre, post], dim=2).to(dtype)), g
            assert torch.equal(call["image"], image.to(dtype)), g

    record = json.loads((tmp_path / "keys.json").read_text())
    assert record["keyframe_pictures"] == ["keys.key1.png", "keys.key2.png"]
    assert record["settings"]["keyframes"] == [{"seconds": 0.8, "weight": 1.0}, {"seconds": 1.3, "weight": 0.5}]
    assert [s["sections"] for s in record["settings"]["keyframe_sections"]] == [
        [{"section": 1, "as": "post"}, {"section": 2, "as": "pre"}],
        [{"section": 2, "as": "post"}, {"section": 3, "as": "pre"}]]
    comment = json.loads(mp4_metadata(tmp_path / "keys.mp4")["comment"])
    assert comment["keyframes"] == record["settings"]["keyframes"] and comment["loop"] is False

    # Stopped after two sections and resumed: the keyframes come back from the run's own files.
    stop = lambda event, run: isinstance(event, SectionDone) and event.section == 1 and run.stop()  # noqa: E731
    run_events(_request(picture, keyframes=keyframes), tiny_models, tmp_path / "part.mp4", on_event=stop)
    resumed = begin(Resume(tmp_path / "part.json")).execute(fixed_session(tiny_models), lambda e: None)
    assert resumed.frames == 49
    assert np.array_equal(mp4_info(tmp_path / "part.mp4")[1], mp4_info(tmp_path / "keys.mp4")[1])


def test_a_loop_ends_on_the_start_picture(tiny_models, picture, tmp_path):
    seen, handle = _recording(tiny_models.transformer)
    try:
        run_events(_request(picture, loop=True, seconds=0.8), tiny_models, tmp_path / "loop.mp4")
    finally:
        handle.remove()
    (start,), _ = _encoded(tiny_models, picture, [])
    dtype = tiny_models.transformer.dtype
    # The first section sampled holds the video's last frames: its post frame is the start picture.
    assert torch.equal(seen[0]["clean"], torch.cat([start, start], dim=2).to(dtype))
    saved = load_latents(tmp_path / "loop.latents.safetensors")
    assert torch.equal(saved.end, saved.start) and saved.settings["loop"] is True


@pytest.mark.parametrize("fields, message", [
    ({"keyframes": ["{a}@2"]}, "The keyframe at 2 s is past the end of the video (1.60 s)."),
    ({"keyframes": ["{a}@0.8", "{a}@0.8:0.5"]}, "The keyframes at 0.8 s and 0.8 s fall on the same section edge"),
    ({"keyframes": ["{a}@0.8"], "mode": "forward"}, "Keyframes after the start need inverted sampling"),
    ({"loop": True, "mode": "forward"}, "A loop needs inverted sampling"),
    ({"keyframes": ["{a}"]}, "A keyframe is PATH@SECONDS or PATH@SECONDS:WEIGHT"),
])
def test_bad_keyframes_are_one_sentence_and_write_nothing(tiny_models, picture, keyframe_pictures, tmp_path,
                                                         fields, message):
    if "keyframes" in fields:
        fields = fields | {"keyframes": [k.format(a=keyframe_pictures[0]) for k in fields["keyframes"]]}
    events = run_events(_request(picture, **fields), tiny_models, tmp_path / "out" / "bad.mp4")
    assert isinstance(events[-1], Failed) and message in events[-1].message and "\n" not in events[-1].message
    assert not (tmp_path / "out").exists()


def test_the_queues_import_columns_take_keyframes_and_loop(tmp_path, picture, keyframe_pictures):
    from jobs.intake import export_jobs, import_file, job_request
    from jobs.store import JobStore

    key = keyframe_pictures[0]
    (tmp_path / "k.png").write_bytes(key.read_bytes())  # relative paths are found next to the file
    path = tmp_path / "jobs.csv"
    path.write_text("image,prompt,model,resolution,seconds,window,keyframes,loop\n"
                    f"{picture},a,tiny,128,1.6,3,k.png@0.8; k.png@1.2:0.5,false\n"
                    f"{picture},b,tiny,128,1.6,3,,true\n"
                    f"{picture},c,tiny,128,1.6,3,k.png@9,false\n")
    store = JobStore(tmp_path / "out")
    added, errors = import_file(store, path)
    assert len(added) == 2 and errors[0][0] == 4 and "past the end of the video (1.60 s)" in errors[0][1]
    first, second = (store.get(i).settings for i in added)
    assert [(k["seconds"], k["weight"]) for k in first["keyframes"]] == [(0.8, 1.0), (1.2, 0.5)]
    assert second["loop"] is True and second["keyframes"] == []
    request = job_request(first, store.outputs).validated()
    assert [(s, w) for _, s, w in request.keyframes] == [(0.8, 1.0), (1.2, 0.5)]
    assert request.keyframes[0][0].tobytes() == Image.open(key).convert("RGB").tobytes()
    exported = export_jobs(store)
    assert Path(exported[0]["keyframes"][0]["picture"]).is_file()
