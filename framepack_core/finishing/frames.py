"""Frames streamed through ffmpeg both ways: read one at a time from the source, written one at a time into
the parts of the result. Nothing holds a whole video: memory stays that of a frame or two, however long the
video is.

A finishing run writes its result as parts of `part_frames` source frames each, every part an MP4 of its own
(H.264, yuv420p, the app's encoder settings), renamed into place only when whole. A resumed run skips the parts
that exist; the encoder is deterministic, so the parts, and the video joined from them without re-encoding
(media/segments.concat_mp4), are the same bytes as a run never stopped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np


def read_frames(path: Path, skip: int = 0) -> Iterator[np.ndarray]:
    """The video's frames as (H, W, 3) uint8, after the first `skip` (decoded and dropped, never kept)."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        for index, raw in enumerate(reader):
            if index >= skip:
                yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


class PartWriter:
    """One part, encoded as frames arrive; `finish()` renames it into place, `abandon()` removes it."""

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int):
        if width % 2 or height % 2:
            raise ValueError(f"H.264 in yuv420p needs even frame sizes, got {width}x{height}")
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.frames = 0
        self.writer = imageio_ffmpeg.write_frames(
            str(self.tmp), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            output_params=["-crf", str(int(crf)), "-preset", "medium"], macro_block_size=2,
            ffmpeg_log_level="error")
        self.writer.send(None)

    def send(self, frame: np.ndarray) -> None:
        self.writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def finish(self) -> Path:
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abandon(self) -> None:
        try:
            self.writer.close()
        except Exception:  # the encoder may be what failed; its half-written file goes either way
            pass
        self.tmp.unlink(missing_ok=True)


def part_path(folder: Path, number: int) -> Path:
    return folder / f"part-{number:05d}.mp4"


def done_parts(folder: Path) -> int:
    """How many parts, counted from the first, are whole (a resume starts after them)."""
    count = 0
    while part_path(folder, count + 1).exists():
        count += 1
    return count


def with_following(frames):
    """(frame, the next frame or None at the end), reading one frame ahead (an interpolation needs both);
    closing it closes the reader."""
    previous = None
    try:
        for frame in frames:
            if previous is not None:
                yield previous, frame
            previous = frame
        if previous is not None:
            yield previous, None
    finally:
        frames.close()
