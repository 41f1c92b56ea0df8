"""What a finishing run is asked to do, checked once, before anything is written: the one sentence for a
source that is not a video, a model file that is not an upscaler (or RIFE), a factor out of range, an output
over the source, too little disk."""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from framepack_core.settings import DEFAULTS

OPERATIONS = {"upscale": (2, 4), "interpolate": (2, 4)}
PART_FRAMES = 30  # source frames per part: what a Stop or a kill can cost at most
DISK_MARGIN = 1.5  # the result is estimated at the source's bytes per pixel; H.264 of upscaled detail may need more


@dataclass(frozen=True)
class FinishRequest:
    operation: str  # upscale | interpolate
    source: Path
    factor: int  # the upscale's scale, or how many times the frame rate
    model: str | None = None  # upscaler name or file; RIFE file; None: the default (for interpolate: rife/ or ffmpeg)
    folder: Path = DEFAULTS["folder"]
    output: Path | None = None  # an exact MP4 path instead of a fresh name in `folder`
    tile: int | None = None  # upscale tile side in pixels; None: from the VRAM budget
    crf: int = DEFAULTS["crf"]
    part_frames: int = PART_FRAMES
    upscalers: Path = Path("upscalers")
    rife_folder: Path = Path("rife")

    def validated(self):
        """(self with absolute paths, the source's facts); ValueError with one sentence on bad input."""
        from framepack_core.media.video_files import probe_video

        if self.operation not in OPERATIONS:
            raise ValueError(f"Finishing is one of {', '.join(OPERATIONS)}, not {self.operation!r}.")
        if self.factor not in OPERATIONS[self.operation]:
            word = "scale" if self.operation == "upscale" else "factor"
            raise ValueError(f"The {word} is 2 or 4, not {self.factor}.")
        if not 4 <= self.part_frames <= 10_000 or not 0 <= self.crf <= 51:
            raise ValueError("The part size is 4 to 10000 frames and the CRF 0 to 51.")
        source = Path(self.source).absolute()
        if not source.is_file():
            raise ValueError(f"There is no video at {self.source}.")
        try:
            facts = probe_video(source)
        except ValueError:  # its message quotes ffmpeg's log; a sentence is enough here
            raise ValueError(f"{source.name} is not a video this app can read.") from None
        if facts.frames < (2 if self.operation == "interpolate" else 1):
            raise ValueError(f"{source.name} has too few frames ({facts.frames}) to {self.operation}.")
        if self.operation == "interpolate" and (facts.width % 2 or facts.height % 2):
            raise ValueError(f"{source.name} is {facts.width}x{facts.height}; interpolation keeps the size, and H.264 "
                             "as this app writes it needs even sides (upscale it first, or crop it).")
        output = Path(self.output).absolute() if self.output else None
        if output is not None and output.exists() and output.samefile(source):
            raise ValueError("The output would replace the source video; give another --output.")
        absolute = {name: Path(getattr(self, name)).absolute() for name in ("folder", "upscalers", "rife_folder")}
        return replace(self, source=source, output=output, **absolute), facts

    def fields(self) -> dict:
        """What the record keeps to resume it (paths as text)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: dict) -> FinishRequest:
        paths = ("source", "folder", "output", "upscalers", "rife_folder")
        return cls(**{k: Path(v) if k in paths and v is not None else v for k, v in fields.items()})


def check_disk(folder: Path, source: Path, facts, width: int, height: int, frames: int) -> None:
    """Refuse, in one sentence, a result that would not fit (estimated at the source's bytes per pixel)."""
    from framepack_core.models.download import GB, _existing

    per_pixel = source.stat().st_size / max(facts.frames * facts.width * facts.height, 1)
    needed = int(per_pixel * width * height * frames * DISK_MARGIN) + 2 * source.stat().st_size
    free = shutil.disk_usage(_existing(folder)).free
    if needed > free:
        raise ValueError(f"The result needs about {needed / GB:.2f} GB in {folder}, which has {free / GB:.2f} GB "
                         "free; free some space there (or pass --outputs with another folder) and try again.")
