"""Reading videos from anywhere: the facts of the stream, the first frame, the last frames."""
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
    """The facts of the first video stream, from ffmpeg (frames are counted by decoding)."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, StopIteration) as error:
        raise ValueError(f"{Path(path).name} is not a video this app can read ({str(error)[:200]}).") from None
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    match = re.search(r"Video: (\w+)(?: \(([^)]*)\))?", info)
    codec, profile = (match.group(1), match.group(2) or "") if match else ("", "")
    pix_fmt = str(meta.get("pix_fmt", "")).split("(")[0]
    width, height = meta["size"]
    return VideoFacts(int(frames), int(width), int(height), float(meta["fps"]), codec, profile, pix_fmt)


def first_frame(path: Path):
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    frame = np.frombuffer(next(reader), np.uint8).reshape(height, width, 3)
    reader.close()
    return Image.fromarray(frame.copy())


def last_frames(path: Path, count: int):
    """The last `count` frames as (T, H, W, 3) uint8, read in one pass (only they are kept)."""
    from collections import deque

    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    kept = deque(maxlen=count)
    for raw in reader:
        kept.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
    return np.stack(list(kept))
