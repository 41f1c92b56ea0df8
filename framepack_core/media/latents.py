"""A run's section latents, kept beside its MP4 as safetensors (NAME.latents.safetensors).

Rewritten whole (to a temporary name, then renamed) after every section, so a stopped, failed
or killed run leaves the state of its last finished section: enough to resume it exactly, or to
extend the finished video. The settings that made the latents ride in the file's metadata.

    start     (1, 16, 1, h, w)  the start picture's latent
    video     (1, 16, T, h, w)  every latent frame so far, in temporal order
    end       (1, 16, 1, h, w)  the end frame's latent, when there is one
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ..atomic import write_atomically
from ..settings import SamplingMode

FORMAT = "framepack-latents/1"


@dataclass
class SavedLatents:
    settings: dict  # Request.settings() of the run that made them
    sections: int  # sections the run makes
    done: int  # sections finished
    start: torch.Tensor
    video: torch.Tensor
    end: torch.Tensor | None = None
    # Frames copied in: an extension's (or branch's) {"video": source MP4, "frames": its frames kept, ...},
    # a bridge's {"bridge": [first clip, second clip]}; {} for a video from a picture.
    extends: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.done >= self.sections


def save_latents(path: Path, saved: SavedLatents) -> None:
    tensors = {"start": saved.start, "video": saved.video}
    if saved.end is not None:
        tensors["end"] = saved.end
    tensors = {name: t.detach().float().cpu().contiguous().clone() for name, t in tensors.items()}
    metadata = {"format": FORMAT, "settings": json.dumps(saved.settings, sort_keys=True, default=str),
                "sections": str(saved.sections), "done": str(saved.done),
                "extends": json.dumps(saved.extends, sort_keys=True)}
    write_atomically(path, save(tensors, metadata=metadata))


def load_latents(path: Path) -> SavedLatents:
    """Raises ValueError (one sentence) for a file that is not a run's saved latents."""
    try:
        data = Path(path).read_bytes()
        tensors = load(data)
        metadata = _metadata(data)
    except (OSError, SafetensorError, ValueError) as error:
        raise ValueError(f"The saved latents {str(path)!r} cannot be read ({error}).") from None
    if metadata.get("format") != FORMAT or "start" not in tensors or "video" not in tensors:
        raise ValueError(f"{str(path)!r} is not a FramePack run's saved latents.")
    return SavedLatents(json.loads(metadata["settings"]), int(metadata["sections"]), int(metadata["done"]),
                        tensors["start"], tensors["video"], tensors.get("end"),
                        json.loads(metadata.get("extends") or "{}"))


def _metadata(data: bytes) -> dict:
    # The safetensors header: an 8-byte little-endian length, then JSON with "__metadata__".
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__", {})


class LatentsKeeper:
    """Writes a run's latents after every section (nothing when the run keeps none: `path` None)."""

    def __init__(self, path: Path | None, request, sections: int, start: torch.Tensor, end: torch.Tensor | None,
                 extends: dict | None = None):
        """`extends`: where frames copied into the video come from (engine.beginning.Beginning.joins: the video
        extended or branched, the clips bridged), so the run can be resumed and extended again."""
        self.path, self.sections, self.start, self.end = path, sections, start, end
        self.settings = request.settings()
        self.extends = dict(extends or {})
        self.empty = start if request.method.mode == SamplingMode.FORWARD else start[:, :, :0]

    def save(self, video: torch.Tensor | None, done: int) -> None:
        if self.path is None:
            return
        video = self.empty if video is None else video
        save_latents(self.path, SavedLatents(self.settings, self.sections, done, self.start, video, self.end,
                                             self.extends))
