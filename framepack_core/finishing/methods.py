"""What a finishing run does to each frame: upscale it (spandrel's model, in tiles), or put RIFE's frames
between it and the next one. Each method says the result's size, rate and frame count, and what the record
keeps about it (the model file's name and SHA-256)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import rife, tiles, upscalers

RIFE_SUFFIXES = (".pkl", ".pth", ".safetensors")
RIFE_FOLDER = Path("rife")  # where a user puts RIFE's flownet file (Practical-RIFE's train_log/flownet.pkl)


class Upscale:
    def __init__(self, upscaler: upscalers.Upscaler, tile: int | None, device: str = "cpu",
                 budget_bytes: int | None = None):
        self.upscaler, self.device = upscaler, device
        self.model = upscaler.model.to(device)
        self.dtype = torch.float16 if device.startswith("cuda") and upscaler.model.supports_half else torch.float32
        self.tile = tile or tiles.tile_size(budget_bytes, upscaler.model.model, upscaler.scale)
        self.factor = upscaler.scale

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width * self.factor, height * self.factor

    def fps(self, fps: float) -> float:
        return fps

    def frames(self, count: int) -> int:
        return count

    def outputs(self, frame: np.ndarray, following: np.ndarray | None) -> Iterator[np.ndarray]:
        yield tiles.upscale_frame(self.model, frame, self.tile, device=self.device, dtype=self.dtype)

    def described(self) -> dict:
        return {"method": f"spandrel {self.upscaler.architecture}", "tile": self.tile} | self.upscaler.described


class RifeInterpolate:
    """`factor - 1` frames between each frame and the next, at times 1/factor, 2/factor, ...; the source's own
    frames are kept as they are: N frames give (N - 1) * factor + 1."""

    def __init__(self, path: Path, factor: int, device: str = "cpu"):
        self.path, self.factor, self.device = Path(path), factor, device
        self.net = rife.load(path, device)
        self.sha256 = upscalers.file_sha256(self.path)

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    def fps(self, fps: float) -> float:
        return fps * self.factor

    def frames(self, count: int) -> int:
        return (count - 1) * self.factor + 1 if count else 0

    @torch.no_grad()
    def outputs(self, frame: np.ndarray, following: np.ndarray | None) -> Iterator[np.ndarray]:
        yield frame
        if following is None:
            return
        first, second = _padded(frame, self.net.multiple, self.device), _padded(following, self.net.multiple,
                                                                                 self.device)
        height, width = frame.shape[:2]
        for step in range(1, self.factor):
            middle = self.net(first, second, step / self.factor)[:, :, :height, :width]
            yield (middle[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def described(self) -> dict:
        return {"method": "rife", "model_file": self.path.name, "model_sha256": self.sha256}


def rife_file(model: str | None, folder: Path = RIFE_FOLDER) -> Path | None:
    """The RIFE flownet to use: `model` (a path), else the first file in the rife folder, else None (then
    ffmpeg's minterpolate does the work)."""
    if model:
        path = Path(model)
        if not path.is_file():
            raise ValueError(f"There is no RIFE model file at {model}.")
        return path
    try:
        found = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in RIFE_SUFFIXES)
    except OSError:
        return None
    return found[0] if found else None


def _padded(frame: np.ndarray, multiple: int, device: str) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') float in [0, 1], H' and W' multiples of `multiple` (zeros added, as the
    published inference pads)."""
    image = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].to(device).float() / 255
    height, width = frame.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    return torch.nn.functional.pad(image, (0, pad_w, 0, pad_h))


def make_method(request, device: str = "cpu", budget_bytes: int | None = None, say=lambda line: None):
    """The method a request asks for, its model loaded (ValueError, one sentence, for a file that is not one);
    None: ffmpeg's minterpolate (interpolation with no RIFE file)."""
    if request.operation == "upscale":
        path = upscalers.resolve(request.model, request.factor, request.upscalers, say)
        upscaler = upscalers.load(path, device)
        if upscaler.scale != request.factor:
            raise ValueError(f"{path.name} upscales x{upscaler.scale}, not x{request.factor}: give --scale "
                             f"{upscaler.scale}, or an x{request.factor} model.")
        return Upscale(upscaler, request.tile, device, budget_bytes)
    path = rife_file(request.model, request.rife_folder)
    return None if path is None else RifeInterpolate(path, request.factor, device)
