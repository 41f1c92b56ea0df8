"""The outputs folder: for every run the cropped input picture, the MP4 and a JSON of the settings.

The three files share one name, `<date>-<time>_<seed>`, so that they sort together and a
video can be matched to the picture and settings that made it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from framepack_core.conditioning import crop_to_bucket, resize_and_center_crop


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

    @property
    def video(self) -> Path:
        return self.folder / f"{self.name}.mp4"

    @property
    def settings(self) -> Path:
        return self.folder / f"{self.name}.json"


def new_run(folder: str | os.PathLike, seed: int) -> RunFiles:
    """Fresh names in `folder` (created if needed); never reuses the names of an earlier run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}_{seed}"
    name, n = stem, 1
    # Two runs in the same second with the same seed get -2, -3, ...
    while any(folder.glob(f"{name}.*")):
        n += 1
        name = f"{stem}-{n}"
    return RunFiles(folder, name)


def save_inputs(files: RunFiles, request) -> None:
    """The picture as the model sees it (cropped to its bucket), and the end frame if any.

    `request` must be validated: its pictures are then PIL images, upright and RGB.
    """
    pixels = crop_to_bucket(request.image, request.resolution)
    Image.fromarray(pixels).save(files.picture)
    if request.end_image is not None:
        height, width = pixels.shape[:2]
        Image.fromarray(resize_and_center_crop(request.end_image, width, height)).save(files.end_picture)


def write_settings(files: RunFiles, record: dict) -> Path:
    """The JSON record of a run, written whole to a temporary name and renamed into place."""
    tmp = files.settings.with_name(f".{files.settings.name}.partial")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, files.settings)
    return files.settings
