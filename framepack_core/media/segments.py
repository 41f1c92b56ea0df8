"""The growing video as encoded segments, so every section costs the same to write.

Only the `overlap` frames that the next section will blend into are kept as float pixels;
every other frame is final once its section is blended, and is encoded exactly once into a
segment file. The MP4 so far is the segments (plus the still-changing frames, encoded on
their own) joined by ffmpeg's concat demuxer without re-encoding.

Videos from elsewhere join the same way, copied as they are: the video being extended (or its
first part, cut at a keyframe, for a branch) before the new frames, and for a bridge the clip
the new frames lead into after them.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import torch

from framepack_core.failures import disk_problem
from framepack_core.settings import FPS, SamplingMode

from .video_files import first_frames
from .video import blend_after, blend_before, to_uint8_frames, write_mp4


@dataclass(frozen=True)
class Copied:
    """An MP4's frames joined to the new ones as they are, never re-encoded."""
    path: Path
    frames: int  # how many of its frames the video keeps
    cut: bool = False  # only its first `frames` (a branch: copied when a cut point, else encoded again)


class SegmentedVideo:
    def __init__(self, output: Path, mode: SamplingMode, overlap: int, crf: int, metadata: dict[str, str] | None = None,
                 before: Copied | None = None, after: Copied | None = None, fps: float | None = None,
                 new_frames: int | None = None):
        """`before` / `after`: frames copied before / after the new ones (a video extended or branched;
        the two clips a bridge joins). `new_frames`: keep only this many new frames (forward), cutting the
        last section's end."""
        self.inverted = mode == SamplingMode.INVERTED
        self.overlap, self.crf, self.metadata = overlap, crf, metadata or {}
        self.workdir = Path(tempfile.mkdtemp(prefix=f".{output.stem}.", suffix=".segments", dir=output.parent))
        self.fps = fps or FPS
        self.durations: dict[Path, float] = {}  # parts whose container misstates their length
        self.before = self._copied(before)
        self.after = [after.path] if after else []
        self.segments: list[Path] = []  # the new frames' segments, in temporal order
        self.pending: torch.Tensor | None = None  # float frames a later section still blends into
        copied = (before.frames if before else 0) + (after.frames if after else 0)
        self.before_frames, self.after_frames = (before.frames if before else 0), (after.frames if after else 0)
        self.frames = copied  # every frame of the video so far, pending and copied ones included
        self.max_frames = None if new_frames is None else copied + new_frames
        self.height = self.width = 0
        self._count = 0

    def add(self, new: torch.Tensor, last: bool) -> None:
        """Blend a freshly decoded span (1, 3, T, H, W) in and encode the frames that became final."""
        if self.pending is None:
            video = new
        elif self.inverted:
            video = blend_before(new, self.pending, self.overlap)
        else:
            video = blend_after(self.pending, new, self.overlap)
        self.frames += video.shape[2] - (0 if self.pending is None else self.pending.shape[2])
        if self.max_frames is not None and self.frames > self.max_frames and not self.inverted:
            video = video[:, :, : video.shape[2] - (self.frames - self.max_frames)]  # past the length asked for
            self.frames = self.max_frames
        self.height, self.width = video.shape[3], video.shape[4]
        keep = 0 if last else min(self.overlap, video.shape[2])
        # Inverted: the next section blends into the earliest frames; forward: into the latest.
        if self.inverted:
            final, self.pending = video[:, :, keep:], video[:, :, :keep]
        else:
            final, self.pending = video[:, :, : video.shape[2] - keep], video[:, :, video.shape[2] - keep:]
        self.pending = self.pending.clone() if keep else None
        if final.shape[2]:
            segment = self._encode(final)
            self.segments.insert(0, segment) if self.inverted else self.segments.append(segment)

    @property
    def final_prefix(self) -> int:
        """How many frames, from the first, no later section changes (a finishing step may take them now).
        Inverted sampling makes the end first: its new frames are final, from the first, only when all are made."""
        if self.pending is None:
            return self.frames
        if self.inverted:
            return self.before_frames
        return self.frames - self.pending.shape[2] - self.after_frames

    def write(self, path: Path) -> Path:
        """The whole video so far as one playable MP4 at `path` (written aside, then renamed)."""
        parts = list(self.segments)
        if self.pending is not None:
            tail = self._encode(self.pending, name="pending.mp4")
            parts = [tail] + parts if self.inverted else parts + [tail]
        copied = self.before + self.after
        return concat_mp4(self.before + parts + self.after, path, self.metadata, video_only=bool(copied),
                          durations=self.durations)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _copied(self, before: Copied | None) -> list[Path]:
        if before is None:
            return []
        if not before.cut:
            return [before.path]
        try:
            kept = first_frames(before.path, before.frames, self.workdir / "kept.mp4", max(1, self.crf))
        except (OSError, RuntimeError) as error:
            raise _as_disk_error(error, self.workdir.parent) from error
        # Cut after a group of frames whose last packet shows an earlier frame (B-frames), the copy's
        # container ends early; told its true length, the concat demuxer starts the next part on time.
        self.durations[kept] = before.frames / self.fps
        return [kept]

    def _encode(self, pixels: torch.Tensor, name: str | None = None) -> Path:
        if name is None:
            self._count += 1
            name = f"segment-{self._count:05d}.mp4"
        try:
            return write_mp4(to_uint8_frames(pixels), self.workdir / name, crf=self.crf, fps=self.fps)
        except (OSError, RuntimeError) as error:
            raise _as_disk_error(error, self.workdir.parent) from error


def concat_mp4(parts: list[Path], path: Path, metadata: dict[str, str] | None = None, video_only: bool = False,
               durations: dict[Path, float] | None = None) -> Path:
    """Join MP4 files made with the same encoder settings, copying the streams (no re-encode).

    Metadata travels in an ffmetadata file, never on the command line: a user's prompt may be
    longer than the system allows a command line to be, and may hold any character.
    `video_only`: keep the first video stream only (a video from elsewhere may carry sound the new
    parts lack). `durations`: seconds of parts whose own container misstates them.
    """
    listing = path.with_name(f".{path.stem}.concat.txt")
    tags = path.with_name(f".{path.stem}.metadata.txt")
    tmp = path.with_name(f".{path.stem}.joining{path.suffix}")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "concat", "-safe", "0",
               "-i", str(listing), "-f", "ffmetadata", "-i", str(tags), "-map", "0:v:0" if video_only else "0",
               "-map_metadata", "1",
               "-c", "copy", "-movflags", "+faststart", str(tmp)]
    try:
        durations = durations or {}
        listing.write_text("".join(f"file '{_quote(p.resolve())}'\n"
                                   + (f"duration {durations[p]:.6f}\n" if p in durations else "") for p in parts))
        tags.write_text(ffmetadata(metadata or {}), encoding="utf-8")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise _as_disk_error(RuntimeError(f"joining the video segments failed: {result.stderr.strip()[:300]}"),
                                 path.parent)
        os.replace(tmp, path)
    finally:
        for scratch in (listing, tags, tmp):
            scratch.unlink(missing_ok=True)
    return path


def _as_disk_error(error: BaseException, folder: Path) -> BaseException:
    """ffmpeg's "No space left on device" (or a read-only folder) as the OSError it is, naming the folder;
    any other error as it was."""
    problem = disk_problem(error)
    if problem is None or (isinstance(error, OSError) and error.filename):
        return error
    code = errno.ENOSPC if problem == "full" else errno.EROFS
    return OSError(code, os.strerror(code), str(folder))


def ffmetadata(metadata: dict[str, str]) -> str:
    """ffmpeg's metadata file format: `key=value` lines, with = ; # \\ and newlines escaped by a backslash."""
    def escape(text: str) -> str:
        return "".join("\\" + c if c in "=;#\\\n" else c for c in str(text))
    return ";FFMETADATA1\n" + "".join(f"{escape(k)}={escape(v)}\n" for k, v in metadata.items())


def _quote(path: Path) -> str:
    # The concat list format escapes single quotes as '\''.
    return str(path).replace("'", "'\\''")
