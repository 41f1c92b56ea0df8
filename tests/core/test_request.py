"""The request validator: good values pass through, bad ones get one clear sentence."""
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from framepack_core.engine.generation import section_settings
from framepack_core.media.pictures import load_picture
from framepack_core.request import MethodSettings, OutputSettings, Request, SpeedSettings


def GenerationRequest(**fields):  # noqa: N802  (the flat names every front end speaks)
    return Request.from_fields(**fields)


def test_defaults_resolve(picture):
    req = GenerationRequest(image=str(picture), prompt="a cat").validated()
    m = req.method
    assert m.mode == "inverted" and m.seed == 31337 and m.steps == 25 and m.seconds == 5 and req.model == "framepack"
    assert isinstance(req.image, Image.Image) and req.image.size == (100, 70) and req.image_name == picture.name
    assert GenerationRequest(image=picture, prompt="x", model="framepack-f1").validated().method.mode == "forward"
    settings = section_settings(req)
    assert (settings.window, settings.gs, settings.cfg, settings.rs, settings.sections) == (9, 10.0, 1.0, 0.0, 4)


def test_flat_names_find_their_parts_and_come_back_from_a_record(picture):
    req = GenerationRequest(image=picture, prompt="a cat", seconds=2, crf=20, fp8=True, folder="out", model="tiny")
    assert req.method == MethodSettings(prompt="a cat", seconds=2)
    assert req.output == OutputSettings(folder="out", crf=20) and req.speed == SpeedSettings(fp8=True)
    settings = req.validated().settings()
    assert settings["model"] == "tiny" and settings["crf"] == 20 and settings["fp8"] == "storage"  # true: before modes
    assert settings["mode"] == "inverted" and settings["end_image"] is False
    del settings["end_image"]
    again = Request.from_fields(image=picture, **settings).validated()
    assert again.method == req.validated().method and again.speed == req.validated().speed
    with pytest.raises(ValueError, match="Unknown setting: colour"):
        GenerationRequest(image=picture, prompt="x", colour="red")


def test_output_path_must_be_an_mp4_in_a_writable_place(picture, tmp_path):
    with pytest.raises(ValueError, match="must end in .mp4"):
        GenerationRequest(image=picture, prompt="x", path=tmp_path / "v.avi").validated()
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        GenerationRequest(image=picture, prompt="x", path=tmp_path / "d.mp4").validated()
    out = GenerationRequest(image=picture, prompt="x", path=tmp_path / "a" / "v.mp4").validated().output
    assert out.folder == tmp_path / "a" and out.path == tmp_path / "a" / "v.mp4"


@pytest.mark.parametrize("change,message", [
    (dict(seconds=0), "Length"), (dict(seconds=-1), "Length"), (dict(seconds=1000), "Length"),
    (dict(seconds=float("nan")), "Length"), (dict(steps=0), "Steps"), (dict(steps=2.5), "Steps"),
    (dict(seed="abc"), "Seed"), (dict(seed=-1), "Seed"), (dict(seed=True), "Seed"),
    (dict(resolution=64), "Resolution"), (dict(crf=60), "CRF"), (dict(cfg=0.5), "CFG"),
    (dict(rs=2), "rescale"), (dict(mode="sideways"), "mode"), (dict(variant="bh3"), "variant"),
    (dict(prompt=None), "prompt"), (dict(image=None), "picture"), (dict(image=""), "picture"),
    (dict(image="/no/such/file.png"), "does not exist"), (dict(image=3), "picture"),
    (dict(model="huge"), "Unknown model set"), (dict(vram_budget_gb=-1), "VRAM budget"),
    (dict(negative_prompt=3), "negative prompt"),
])
def test_bad_values_are_refused(picture, change, message):
    fields = dict(image=str(picture), prompt="a cat") | change
    with pytest.raises(ValueError, match=message):
        GenerationRequest(**fields).validated()


def test_end_frame_needs_inverted(picture):
    with pytest.raises(ValueError, match="End frame|end frame"):
        GenerationRequest(image=picture, prompt="x", end_image=picture, mode="forward").validated()
    assert GenerationRequest(image=picture, prompt="x", end_image=picture).validated().end_image.size == (100, 70)
    with pytest.raises(ValueError, match="end frame"):  # F1's own order is forward
        GenerationRequest(image=picture, prompt="x", end_image=picture, model="framepack-f1").validated()


def test_text_named_png_is_refused(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    with pytest.raises(ValueError, match="not a picture"):
        GenerationRequest(image=fake, prompt="x").validated()


def test_truncated_picture_is_refused(tmp_path, picture):
    cut = tmp_path / "cut.png"
    cut.write_bytes(picture.read_bytes()[:60])
    with pytest.raises(ValueError, match="not a picture"):
        load_picture(cut)


def test_transparent_and_16_bit_pictures(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_picture(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparency becomes white
    deep = Image.new("I;16", (4, 4), 65535)
    assert load_picture(deep).getpixel((0, 0)) == (255, 255, 255)


@settings(max_examples=200, deadline=None)
@given(seconds=st.one_of(st.floats(allow_nan=True), st.integers(-10, 500)),
       steps=st.one_of(st.integers(-5, 200), st.floats(-5, 200)),
       seed=st.one_of(st.integers(-5, 2**64), st.text(max_size=3)))
def test_validator_either_accepts_in_range_or_says_why(picture, seconds, steps, seed):
    request = GenerationRequest(image=picture, prompt="p", seconds=seconds, steps=steps, seed=seed)
    try:
        req = request.validated()
    except ValueError as error:
        assert str(error).endswith(".") and "\n" not in str(error)
        return
    m = req.method
    assert 0 < m.seconds <= 120 and 1 <= m.steps <= 100 and isinstance(m.steps, int)
    assert 0 <= m.seed < 2**63 and isinstance(m.seed, int)
