"""Reading videos from anywhere: the facts of the stream, the first frame, the last frames, and
where a stream can be cut without re-encoding it."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    width: int
    height: int
    fps: float
    codec: str
    profile: str
    pix_fmt: str


def probe_video(path: Path) -> VideoFacts:
    """The facts of the first video stream, from ffmpeg (frames are counted by decoding them all).

    ValueError, in one sentence, for a file ffmpeg cannot open as a video, and for one it decodes only with
    errors (cut short, damaged): its frames are not what its header promises, so it is never continued."""
    import imageio_ffmpeg

    name = Path(path).name
    frames, errors = _decode(path)
    if frames == 0:
        raise ValueError(f"{name} is not a video this app can read ({errors or 'it holds no video frames'}).")
    if errors:
        raise ValueError(f"{name} is damaged or cut short: ffmpeg decodes only {frames} frames of it, with errors "
                         f"({errors}); give the whole video.")
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    match = re.search(r"Video: (\w+)(?: \(([^)]*)\))?", info)
    codec, profile = (match.group(1), match.group(2) or "") if match else ("", "")
    pix_fmt = str(meta.get("pix_fmt", "")).split("(")[0]
    width, height = meta["size"]
    return VideoFacts(int(frames), int(width), int(height), _frame_rate(info, float(meta["fps"])), codec, profile,
                      pix_fmt)


def _decode(path: Path) -> tuple[int, str]:
    """(frames of the first video stream ffmpeg decodes, its last error without ffmpeg's prefixes; "" if none).
    imageio-ffmpeg's count_frames_and_secs counts the same way but hides errors in ffmpeg's banner."""
    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-nostats", "-i", str(path),
                           "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-"],
                          capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)$", done.stdout, re.MULTILINE)
    lines = [re.sub(r"^(\[[^]]*\] *)+", "", line).strip() for line in done.stderr.splitlines()]
    errors = [line for line in lines if line]
    if done.returncode != 0 and not errors:
        errors = [f"ffmpeg ended with code {done.returncode}"]
    return (int(counts[-1]) if counts and done.returncode == 0 else 0), (errors[-1].rstrip(".") if errors else "")


def stream_frames(path: Path) -> int:
    """The frames of a video this app wrote, counted from its stream's packets (one an H.264 frame; nothing is
    decoded, so this is cheap): what its record says it holds."""
    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-nostats", "-i", str(path),
                           "-map", "0:v:0", "-c", "copy", "-f", "null", "-progress", "pipe:1", "-"],
                          capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not counts:
        raise OSError(f"{Path(path).name} could not be read back: {done.stderr.strip()[-200:]}")
    return int(counts[-1])


def _frame_rate(info: str, average: float) -> float:
    """The stream's frame rate: ffmpeg's base rate ("tbr"), which is exact, over the average it reports
    ("fps": frames over duration, which B-frames' shifted timestamps can put at 30.01 for a 30 fps video)."""
    match = re.search(r"([\d.]+)(k?) tbr", info)
    if match is None:
        return average
    base = float(match.group(1)) * (1000 if match.group(2) else 1)
    return base if abs(base - average) <= 0.02 * average else average


def first_frame(path: Path):
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    frame = np.frombuffer(next(reader), np.uint8).reshape(height, width, 3)
    reader.close()
    return Image.fromarray(frame.copy())


def last_frames(path: Path, count: int, end: int | None = None):
    """The last `count` frames before frame `end` (None: the video's end) as (T, H, W, 3) uint8, read in
    one pass (only they are kept)."""
    from collections import deque
    from itertools import islice

    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    kept = deque(maxlen=count)
    for raw in islice(reader, end):
        kept.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
    reader.close()
    return np.stack(list(kept))


def cut_points(path: Path) -> list[int]:
    """The frames (display order) before which the stream can be cut by copying packets: the keyframes
    that no earlier-shown frame is decoded after (a closed GOP begins there). Read from the packets'
    flags and timestamps (ffmpeg's framecrc of a stream copy), so nothing is decoded."""
    import imageio_ffmpeg

    listing = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0",
                              "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True).stdout
    # framecrc: "stream, dts, pts, duration, size, crc[, F=flags]" per packet in decode order; a keyframe
    # packet alone has no F= field (its flags are exactly "key").
    packets = [line.split(",") for line in listing.splitlines() if line and not line.startswith("#")]
    pts = [int(fields[2]) for fields in packets]
    shown = {value: rank for rank, value in enumerate(sorted(pts))}
    points, latest = [], -1
    for decoded, fields in enumerate(packets):
        rank = shown[pts[decoded]]
        if len(fields) == 6 and rank == decoded and latest < rank:  # everything shown before it is decoded before it
            points.append(rank)
        latest = max(latest, rank)
    return points


def first_frames(source: Path, frames: int, destination: Path, crf: int) -> Path:
    """The first `frames` frames of `source`'s video stream as an MP4 of their own: copied, bit for bit, when
    `frames` is one of `cut_points(source)`; else encoded again as the app encodes (H.264, `crf`, yuv420p),
    streamed through ffmpeg (never all in memory)."""
    import imageio_ffmpeg

    if frames in cut_points(source):
        codec = ["-c", "copy"]
    else:
        codec = ["-c:v", "libx264", "-crf", str(int(crf)), "-preset", "medium", "-pix_fmt", "yuv420p"]
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(source), "-map", "0:v:0",
                             *codec, "-frames:v", str(int(frames)), str(destination)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"taking the first {frames} frames of {source.name} failed: {result.stderr.strip()[:300]}")
    return destination
