"""The segmented video: the same frames as blending everything in memory, written in constant work."""
import numpy as np
import pytest
import torch

from framepack_core.media.segments import SegmentedVideo
from framepack_core.media.video import blend_after, blend_before, to_uint8_frames, write_mp4
from tests.support.mp4info import mp4_info

OVERLAP = 5  # a window of 2 latent frames: 4K - 3


def spans(sections, mode, seed=0):
    """Decoded spans as the engine produces them: all frames first, later 2K (+1 on the last inverted)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [4 * (2 if mode == "inverted" and sections > 1 else 3) - 3]
    for i in range(1, sections):
        sizes.append(4 * (4 + (1 if mode == "inverted" and i == sections - 1 else 0)) - 3)
    return [torch.rand(1, 3, n, 16, 24, generator=g) * 2 - 1 for n in sizes]


def blended_in_memory(parts, mode):
    video = parts[0]
    for new in parts[1:]:
        video = blend_before(new, video, OVERLAP) if mode == "inverted" else blend_after(video, new, OVERLAP)
    return video


@pytest.mark.parametrize("mode", ["inverted", "forward"])
@pytest.mark.parametrize("sections", [1, 2, 5])
def test_same_frames_as_in_memory(tmp_path, mode, sections):
    parts = spans(sections, mode)
    video = SegmentedVideo(tmp_path / "out.mp4", mode, OVERLAP, crf=0)
    expected_so_far = []
    for i, new in enumerate(parts):
        video.add(new, last=i == sections - 1)
        so_far = blended_in_memory(parts[: i + 1], mode)
        assert video.frames == so_far.shape[2]
        _, frames = mp4_info(video.write(tmp_path / f"so-far-{i}.mp4"))
        expected_so_far.append((frames, so_far, video.final_prefix))
        last = i == sections - 1  # a finishing step takes the final prefix early: no later section changes it
        assert video.final_prefix == (so_far.shape[2] if last else 0 if mode == "inverted" else
                                      so_far.shape[2] - OVERLAP)
    video.close()
    assert not video.workdir.exists()
    reference = write_mp4(to_uint8_frames(blended_in_memory(parts, mode)), tmp_path / "reference.mp4", crf=0)
    _, final = mp4_info(tmp_path / f"so-far-{sections - 1}.mp4")
    assert np.array_equal(final, mp4_info(reference)[1])
    # Every intermediate video is the in-memory blend so far (pending frames included).
    for frames, so_far, prefix in expected_so_far:
        _, direct = mp4_info(write_mp4(to_uint8_frames(so_far), tmp_path / "direct.mp4", crf=0))
        assert np.array_equal(frames, direct)
        assert np.array_equal(frames[:prefix], final[:prefix])  # decoded as in the finished video


@pytest.mark.parametrize("mode", ["inverted", "forward"])
def test_each_frame_is_encoded_once_plus_the_pending_tail(tmp_path, mode, monkeypatch):
    import framepack_core.media.segments as segments

    encoded = []
    real = segments.write_mp4
    monkeypatch.setattr(segments, "write_mp4", lambda frames, path, **kw: (encoded.append(len(frames)),
                                                                            real(frames, path, **kw))[1])
    sections = 6
    video = SegmentedVideo(tmp_path / "o.mp4", mode, OVERLAP, crf=23)
    for i, new in enumerate(spans(sections, mode)):
        encoded.clear()
        video.add(new, last=i == sections - 1)
        final_frames = sum(encoded)
        video.write(tmp_path / "o.mp4")
        # Work per section is bounded by one section's frames, not by the video's length.
        assert sum(encoded) <= 4 * 5 - 3 + OVERLAP + 4
        if 0 < i < sections - 1:
            assert final_frames == 4 * 2 and video.pending.shape[2] == OVERLAP  # 4K new frames each
    assert video.pending is None
    video.close()
