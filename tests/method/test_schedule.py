"""The section schedule: paddings, index layouts and frame counts for 1 to 60 sections."""
import pytest
import torch

from framepack_core.method.schedule import (
    decode_span, forward_layout, inverted_layout, latent_frame_count, latent_paddings, overlap_frames,
    pixel_frame_count, section_count, video_frame_count,
)

SECTIONS = range(1, 61)


def test_reference_defaults():
    assert section_count(5, 9) == 4 and video_frame_count(5, 9) == 145
    assert video_frame_count(2, 9) == 73
    assert video_frame_count(1, 9) == 37
    assert section_count(0.1, 9) == 1  # never zero sections


@pytest.mark.parametrize("n", SECTIONS)
def test_seconds_to_sections_round_trip(n):
    for window in (5, 9, 13):
        assert section_count(n * 4 * window / 30, window) == n


@pytest.mark.parametrize("n", SECTIONS)
def test_paddings(n):
    paddings = latent_paddings(n)
    assert len(paddings) == n and paddings[-1] == 0
    if n <= 4:
        assert paddings == list(range(n - 1, -1, -1))
    else:
        assert paddings[0] == 3 and paddings[-2:] == [1, 0] and set(paddings[1:-2]) == {2}
        assert paddings.count(2) == n - 3


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
@pytest.mark.parametrize("window", [1, 9, 16])
def test_inverted_layout(padding, window):
    layout = inverted_layout(padding, window)
    gap = padding * window
    assert layout.clean.tolist() == [0, 1 + gap + window]
    assert layout.window.tolist() == list(range(1 + gap, 1 + gap + window))
    post = 1 + gap + window
    assert layout.context_2x.tolist() == [post + 1, post + 2]
    assert layout.context_4x.tolist() == list(range(post + 3, post + 19))
    # The blank positions are a gap in RoPE, never tokens.
    seen = torch.cat([layout.clean, layout.window, layout.context_2x, layout.context_4x]).tolist()
    assert sorted(seen) == sorted(set(range(post + 19)) - set(range(1, 1 + gap)))
    assert all(t.ndim == 1 for t in (layout.clean, layout.window, layout.context_2x, layout.context_4x))


@pytest.mark.parametrize("window", [1, 9, 16])
def test_forward_layout(window):
    layout = forward_layout(window)
    assert layout.clean.tolist() == [0, 19]
    assert layout.context_4x.tolist() == list(range(1, 17))
    assert layout.context_2x.tolist() == [17, 18]
    assert layout.window.tolist() == list(range(20, 20 + window))


def simulate_pixel_frames(n, window, mode):
    """Frame count of the decoded video after each section, following the decode/blend rules."""
    latents, pixels, counts = (0 if mode == "inverted" else 1), 0, []
    for index in range(n):
        latents += window + (1 if mode == "inverted" and index == n - 1 else 0)
        span = decode_span(index, n, window, mode)
        if span == 0:
            pixels = pixel_frame_count(latents)
        else:
            assert span <= latents
            pixels += pixel_frame_count(span) - overlap_frames(window)
        counts.append(pixels)
    assert latents == latent_frame_count(n, window)
    return counts


@pytest.mark.parametrize("n", SECTIONS)
@pytest.mark.parametrize("mode", ["inverted", "forward"])
def test_frame_counts(n, mode):
    window = 9
    counts = simulate_pixel_frames(n, window, mode)
    assert counts[-1] == 4 * n * window + 1 == pixel_frame_count(latent_frame_count(n, window))
    assert all(b - a in (4 * window, 4 * window + 4) for a, b in zip(counts, counts[1:]))


def test_decode_spans():
    assert [decode_span(i, 3, 9, "inverted") for i in range(3)] == [0, 18, 19]
    assert [decode_span(i, 3, 9, "forward") for i in range(3)] == [0, 18, 18]
    assert overlap_frames(9) == 33
