"""Awkward but valid pictures all work; the crop keeps what a person sees."""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framepack_core.media.pictures import crop_to_bucket
from framepack_core.media.pictures import MAX_SIDE, load_picture

ROOT = Path(__file__).resolve().parents[2]


def save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def gradient(width, height):
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([x, x[::-1], np.full_like(x, 90)], axis=-1))


@pytest.mark.parametrize("make,name,kw", [
    (lambda: gradient(100, 70).convert("RGBA"), "rgba.png", {}),
    (lambda: gradient(100, 70).convert("L"), "grey.png", {}),
    (lambda: Image.fromarray((np.arange(70 * 100).reshape(70, 100) * 9).astype(np.uint16)), "deep.png", {}),
    (lambda: gradient(100, 70).convert("P"), "palette.gif", {}),
    (lambda: gradient(100, 70).convert("CMYK"), "cmyk.jpg", {}),
    (lambda: gradient(100, 70).convert("1"), "bilevel.png", {}),
    (lambda: gradient(100, 70), "plain.webp", {}),
    (lambda: gradient(100, 70), "plain.bmp", {}),
])
def test_formats_become_rgb_pictures(tmp_path, make, name, kw):
    image = load_picture(save(tmp_path, name, make(), **kw))
    assert image.mode == "RGB" and image.size == (100, 70)
    crop = crop_to_bucket(image, 128)
    assert crop.shape == (112, 144, 3) and crop.dtype == np.uint8


def test_sixteen_bit_keeps_its_range(tmp_path):
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    values = np.asarray(load_picture(save(tmp_path, "d.png", deep)))[0, :, 0].tolist()
    assert values == [0, 128, 255]


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 30), c) for c in ((250, 0, 0), (0, 0, 250))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = load_picture(path).getpixel((5, 5))
    assert r > 200 and b < 50


def test_exif_rotated_photo_is_upright(tmp_path):
    # Stored 100 wide and 70 high, but tagged "rotate 90 degrees": people see a portrait photo.
    stored = gradient(100, 70)
    exif = Image.Exif()
    exif[0x0112] = 6
    image = load_picture(save(tmp_path, "rotated.jpg", stored, exif=exif.tobytes()))
    assert image.size == (70, 100)
    height, width, _ = crop_to_bucket(image, 128).shape
    assert height > width


def test_one_pixel(tmp_path):
    image = load_picture(save(tmp_path, "dot.png", Image.new("RGB", (1, 1), (10, 200, 30))))
    crop = crop_to_bucket(image, 128)
    assert crop.shape == (128, 128, 3) and crop[64, 64].tolist() == [10, 200, 30]


def test_transparent_pixels_become_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_picture(save(tmp_path, "t.png", image)).getpixel((0, 0)) == (255, 255, 255)


def test_caller_picture_is_not_changed():
    picture = Image.new("RGBA", (5, 5), (1, 2, 3, 0))
    load_picture(picture)
    assert picture.mode == "RGBA" and picture.getpixel((0, 0)) == (1, 2, 3, 0)


def test_huge_picture_without_a_memory_spike(tmp_path):
    """An 8000 x 8000 photo is reduced while it is decoded; the process grows by far less than it."""
    path = save(tmp_path, "huge.jpg", Image.new("RGB", (8000, 8000), (120, 80, 40)), quality=80)
    script = (
        "import resource, sys\n"
        "from framepack_core.media.pictures import load_picture\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"image = load_picture({str(path)!r})\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(image.size[0], image.size[1], (after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    width, height, grown_mib = map(int, out.stdout.split())
    assert max(width, height) <= MAX_SIDE and width == height
    assert grown_mib < 8000 * 8000 * 3 / 2**20 / 2  # under half of one full-size RGB copy (183 MiB)


@pytest.mark.parametrize("content,message", [
    (b"just some text", "not a picture"),
    (b"", "not a picture"),
])
def test_broken_files(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_picture(path)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    gradient(300, 200).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="not a picture"):
        load_picture(path)


def test_folder_is_not_a_picture(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        load_picture(tmp_path)
