"""A video's metadata remakes it: the attention kernel that ran, the VAE tiling and FP8 are recorded
beside the settings, and a remake requests them (tiny set, CPU)."""
import json

import numpy as np
import pytest

from framepack_core.request import Request, remake_fields
from tests.support.helpers import run_events, tiny_request
from memory import ModelManager
from tests.support.mp4info import mp4_info, mp4_metadata


def _run(tiny_models, request, output, manager=None):
    finished = run_events(request, tiny_models, output, manager=manager)[-1]
    assert finished.video is not None, finished
    return finished, json.loads(mp4_metadata(finished.video)["comment"])


def _record(video):
    return json.loads(video.with_suffix(".json").read_text())


def test_mp4_and_record_say_what_was_used(tiny_models, picture, tmp_path):
    finished, comment = _run(tiny_models, tiny_request(picture, crf=0), tmp_path / "a.mp4")
    assert (comment["attention_requested"], comment["attention_used"]) == ("auto", "sdpa")
    assert (comment["vae_tiling"], comment["vae_tiling_used"]) == (None, False)
    assert (comment["fp8"], comment["fp8_used"]) == ("off", "off")
    assert "attention" not in comment  # one name for each meaning
    record = _record(finished.video)
    assert (record["attention_used"], record["vae_tiling_used"], record["fp8_used"]) == ("sdpa", False, "off")
    assert record["settings"]["attention_requested"] == "auto"
    assert not {"attention", "vae_tiling", "fp8"} & set(record) and "attention" not in record["settings"]
    assert (finished.attention, finished.vae_tiling, finished.fp8) == ("sdpa", False, "off")


def test_remake_requests_what_ran(tiny_models, picture, tmp_path):
    _, comment = _run(tiny_models, tiny_request(picture, crf=0), tmp_path / "a.mp4")
    fields = remake_fields(comment)
    assert (fields["attention_requested"], fields["vae_tiling"], fields["fp8"]) == ("sdpa", False, "off")
    assert not {"app", "end_image", "attention", "attention_used", "vae_tiling_used", "fp8_used"} & set(fields)


@pytest.mark.parametrize("source", ["mp4", "record"])
def test_a_remake_from_metadata_is_bit_identical(tiny_models, picture, tmp_path, source):
    first, comment = _run(tiny_models, tiny_request(picture, crf=0, seed=5, steps=2), tmp_path / "a.mp4")
    recorded = comment if source == "mp4" else _record(first.video)
    again = Request.from_fields(image=picture, **remake_fields(recorded))
    remade, _ = _run(tiny_models, again, tmp_path / "b.mp4")
    assert np.array_equal(mp4_info(remade.video)[1], mp4_info(first.video)[1])


def _as_before_the_rename(recorded: dict, source: str) -> dict:
    """The same video's metadata as versions before `attention_requested`/`attention_used` wrote it: the
    MP4 said `attention` (requested) and `attention_used`; the record's settings said `attention`
    (requested) and its top level `attention`, `vae_tiling` and `fp8` (used)."""
    old = json.loads(json.dumps(recorded))
    settings = old if source == "mp4" else old["settings"]
    settings["attention"] = settings.pop("attention_requested")
    if source == "record":
        for name in ("attention", "vae_tiling", "fp8"):
            old[name] = old.pop(f"{name}_used")
    return old


@pytest.mark.parametrize("source", ["mp4", "record"])
def test_a_video_recorded_before_the_rename_remakes_exactly(tiny_models, picture, tmp_path, source):
    # The request says "flash"; the CPU runs SDPA: a remake must ask for what ran, under either spelling.
    first, comment = _run(tiny_models, tiny_request(picture, crf=0, seed=7, steps=2, attention_requested="flash"),
                          tmp_path / "a.mp4")
    recorded = comment if source == "mp4" else _record(first.video)
    old = _as_before_the_rename(recorded, source)
    assert remake_fields(old) == remake_fields(recorded)
    assert remake_fields(old)["attention_requested"] == "sdpa"
    again = Request.from_fields(image=picture, **remake_fields(old))
    assert again.speed.attention_requested == "sdpa"
    remade, _ = _run(tiny_models, again, tmp_path / "b.mp4")
    assert np.array_equal(mp4_info(remade.video)[1], mp4_info(first.video)[1])
    # An old record read by name, as a queue row or an import would: the old name is still a setting.
    assert Request.from_fields(image=picture, attention="sage").speed.attention_requested == "sage"


class _ShortOfMemory(ModelManager):
    """The CPU manager, but one that would tile the VAE for lack of memory."""

    def short_of_room(self):
        return True


def test_vae_tiling_is_recorded_and_remade(tiny_models, picture, tmp_path):
    # 288 pixels: wider than 32 latents (the VAE's tile), so tiles do change pixels. One short
    # section (13 frames) keeps the four runs cheap.
    base = dict(crf=0, resolution=288, steps=1, seed=3, seconds=0.4, window=3)
    untiled, _ = _run(tiny_models, tiny_request(picture, **base), tmp_path / "plain.mp4")
    tiled, comment = _run(tiny_models, tiny_request(picture, **base), tmp_path / "tiled.mp4",
                          manager=_ShortOfMemory("cpu"))
    assert comment["vae_tiling"] is None and comment["vae_tiling_used"] is True  # the manager's decision
    assert _record(tiled.video)["vae_tiling_used"] is True
    plain_frames, tiled_frames = mp4_info(untiled.video)[1], mp4_info(tiled.video)[1]
    assert not np.array_equal(plain_frames, tiled_frames)
    # The remake, on a machine with plenty of memory, tiles because the video did.
    again = Request.from_fields(image=picture, **remake_fields(comment))
    assert again.speed.vae_tiling is True
    remade, remade_comment = _run(tiny_models, again, tmp_path / "again.mp4")
    assert remade_comment["vae_tiling_used"] is True
    assert np.array_equal(mp4_info(remade.video)[1], tiled_frames)
    # And forcing it off beats the manager's decision.
    off, off_comment = _run(tiny_models, tiny_request(picture, **base, vae_tiling=False), tmp_path / "off.mp4",
                            manager=_ShortOfMemory("cpu"))
    assert off_comment["vae_tiling_used"] is False
    assert np.array_equal(mp4_info(off.video)[1], plain_frames)


def test_vae_tiling_must_be_a_choice(picture):
    with pytest.raises(ValueError, match="VAE tiling option must be true, false or automatic"):
        tiny_request(picture, vae_tiling="yes").validated()


def test_records_from_before_the_fp8_modes_remake_as_fp8_storage(picture):
    for used, mode in ((True, "storage"), (False, "off"), ("fast", "fast"), ("true", "storage")):  # "true": a CSV cell
        comment = {"model": "tiny", "prompt": "x", "fp8": used, "fp8_used": used, "attention_used": "sdpa"}
        record = {"settings": {"model": "tiny", "prompt": "x", "fp8": used}, "fp8": used, "attention": "sdpa"}
        for recorded in (comment, record):
            request = Request.from_fields(image=picture, **remake_fields(recorded)).validated()
            assert request.speed.fp8 == mode
