"""A run's files: one name, `<date>-<time>_<seed>`, for the picture, the video and the record.

    NAME.png              the picture as the model saw it (cropped to its bucket)
    NAME.end.png          the end frame, if any
    NAME.key1.png ...     the keyframes, if any, in time order (cropped like the end frame)
    NAME.mp4              the video, replaced only when the run ends
    NAME.in-progress.mp4  the video so far, while the run goes
    NAME.json             the record: settings and status (running, finished, stopped, failed)
    NAME.latents.safetensors  the section latents so far (to resume or extend; media/latents.py)

Names are claimed by creating the record exclusively, so two runs (two processes, even) that
start in the same second with the same seed never share one.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFiles:
    folder: Path
    name: str

    @property
    def picture(self) -> Path:
        return self.folder / f"{self.name}.png"

    @property
    def end_picture(self) -> Path:
        return self.folder / f"{self.name}.end.png"

    def keyframe(self, number: int) -> Path:
        """The picture of keyframe `number` (1 = the earliest)."""
        return self.folder / f"{self.name}.key{number}.png"

    @property
    def video(self) -> Path:
        return self.folder / f"{self.name}.mp4"

    @property
    def in_progress(self) -> Path:
        return self.folder / f"{self.name}.in-progress.mp4"

    @property
    def latents(self) -> Path:
        return self.folder / f"{self.name}.latents.safetensors"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.name}.json"

    def write_record(self, record: dict) -> Path:
        """The JSON record, written whole to a temporary name and renamed into place."""
        write_atomically(self.record, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))
        return self.record

    def read_record(self) -> dict:
        return json.loads(self.record.read_text(encoding="utf-8"))


SUFFIXES = (".in-progress.mp4", ".latents.safetensors", ".end.png", ".mp4", ".json", ".png")


def files_of(path: Path) -> RunFiles:
    """The run a file belongs to: its MP4, in-progress MP4, record, latents or picture."""
    path = Path(path)
    for suffix in SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return RunFiles(path.parent, path.name[: -len(suffix)])
    return RunFiles(path.parent, path.stem)


def claim_files(folder: Path, seed: int, exact: Path | None = None) -> RunFiles:
    """Fresh names in `folder` (created if needed), or the exact MP4 path the user gave.

    An exact path keeps the user's choice: its video is replaced only when the new one is done.
    """
    if exact is not None:
        exact.parent.mkdir(parents=True, exist_ok=True)
        return RunFiles(exact.parent, exact.stem)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}_{seed}"
    n = 1
    while True:
        files = RunFiles(folder, stem if n == 1 else f"{stem}-{n}")
        if not any(folder.glob(f"{files.name}.*")):
            try:  # exclusive creation: of two claimants of one name, one wins and the other moves on
                with open(files.record, "x", encoding="utf-8") as claim:
                    claim.write("{}\n")
                return files
            except FileExistsError:
                pass
        n += 1


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
