"""Overlap blending, pixel mapping, the preview and MP4 writing."""
import numpy as np
import pytest
import torch

from framepack_core.media.video import blend_after, blend_before, latent_preview, to_uint8_frames, write_mp4
from tests.support.mp4info import mp4_info


def frames(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1, 1)


def test_blend_before_matches_method():
    new, old = frames([1, 2, 3, 4, 5]), frames([10, 20, 30, 40])
    out = blend_before(new, old, 3)
    a = torch.linspace(1, 0, 3)
    expected = [1, 2] + (a * torch.tensor([3.0, 4, 5]) + (1 - a) * torch.tensor([10.0, 20, 30])).tolist() + [40]
    assert out.flatten().tolist() == pytest.approx(expected)
    assert out.shape[2] == 5 + 4 - 3


def test_blend_after_fades_the_old_out():
    old, new = frames([1, 2, 3]), frames([7, 8, 9, 10])
    out = blend_after(old, new, 2).flatten().tolist()
    assert out == pytest.approx([1, 2, 8, 9, 10])  # weight 1 on old at the first overlap frame, 0 at the last


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0, -0.9961]).view(1, 1, -1, 1, 1).repeat(1, 3, 1, 1, 1)
    out = to_uint8_frames(x)
    assert out.shape == (7, 1, 1, 3) and out.dtype == np.uint8
    assert out[:, 0, 0, 0].tolist() == [0, 0, 128, 191, 255, 255, 0]


def test_preview_shape():
    image = latent_preview(torch.zeros(1, 16, 3, 4, 5))
    assert image.shape == (4, 15, 3) and image.dtype == np.uint8
    # Zero latents map to the bias colour.
    assert image[0, 0].tolist() == [130, 125, 117]


def test_write_mp4(tmp_path):
    rng = np.random.default_rng(0)
    video = np.repeat(rng.integers(0, 255, (1, 32, 48, 3), dtype=np.uint8), 37, axis=0)
    video[:, :, :, 0] = np.arange(37)[:, None, None] * 6  # a changing picture
    path = write_mp4(video, tmp_path / "v.mp4", crf=0, metadata={"comment": "seed=5"})
    meta, decoded = mp4_info(path)
    assert meta["codec"] == "h264" and meta["fps"] == 30 and meta["size"] == (48, 32)
    assert meta["pix_fmt"].startswith("yuv420p")
    assert decoded.shape == (37, 32, 48, 3)
    assert np.abs(decoded.astype(int) - video.astype(int)).mean() < 40  # chroma subsampling of noise
    assert not list(tmp_path.glob(".*partial*"))


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "v.mp4"
    target.write_bytes(b"old video")
    with pytest.raises(ValueError):
        write_mp4(np.zeros((3, 31, 48, 3), np.uint8), target)  # odd height is refused
    assert target.read_bytes() == b"old video"
    with pytest.raises(Exception):
        write_mp4(np.zeros((3, 32, 48), np.uint8), target)  # wrong shape
    assert target.read_bytes() == b"old video" and not list(tmp_path.glob(".*partial*"))
