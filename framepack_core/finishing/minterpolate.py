"""ffmpeg's `minterpolate` (motion-compensated interpolation), the fallback when no RIFE weights are at hand.

ffmpeg reads the source and writes the result itself (nothing passes through this process's memory). It is one
part: ffmpeg's filter carries its motion estimate from frame to frame, so a part started mid-video would differ
from the same frames made in one go; a stopped or killed run makes it again from the start (same bytes).
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Callable

import imageio_ffmpeg


def interpolate_file(source: Path, destination: Path, fps: float, frames: int, crf: int, cancel: threading.Event,
                     progress: Callable[[int], None]) -> bool:
    """Write `frames` frames at `fps` to `destination` (renamed into place when whole). False when stopped.

    The source's last frame is repeated once (`tpad`): without it the filter ends early and N frames give
    fewer than (N - 1) * factor + 1; with it they give exactly that, like RIFE's."""
    tmp = destination.with_name(f".{destination.stem}.partial{destination.suffix}")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-nostats", "-progress", "pipe:1",
               "-i", str(source), "-map", "0:v:0", "-vf", f"tpad=stop_mode=clone:stop=1,minterpolate=fps={fps:g}:mi_mode=mci",
               "-frames:v", str(frames), "-c:v", "libx264", "-crf", str(int(crf)), "-preset", "medium",
               "-pix_fmt", "yuv420p", str(tmp)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if cancel.is_set():
                process.kill()
                process.wait()
                return False
            if line.startswith("frame="):
                progress(int(line.split("=", 1)[1] or 0))
        error = process.stderr.read()
        if process.wait() != 0:
            raise RuntimeError(f"ffmpeg's minterpolate failed: {error.strip()[:300]}")
        os.replace(tmp, destination)
        return True
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        tmp.unlink(missing_ok=True)
