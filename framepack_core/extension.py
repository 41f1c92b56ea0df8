"""What an extension continues from: the source video's latents, start latent and picture.

A video this app made keeps its latents beside it: those are the history, bit for bit. Any other
video (H.264, yuv420p) gets a history by VAE-encoding its last frames, at a size the model takes
(each side rounded to a multiple of 16); the new frames are scaled back to the source's size so
they join its stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .media.pictures import crop_to_bucket
from .media.video_files import first_frame, last_frames
from .method.schedule import CONTEXT_FRAMES
from .models.encoders import encode_latent


@dataclass
class ExtensionBase:
    source: Path
    frames: int  # the source's pixel frames
    fps: float
    start: torch.Tensor  # (1, 16, 1, h, w)
    video: torch.Tensor  # (1, 16, T, h, w): the history the new sections follow
    pixels: np.ndarray  # the start picture at the working size, for the image encoder
    size: tuple[int, int]  # the source's (width, height)
    new_frames: int | None = None  # frames the new part keeps (None: its whole sections; new_part.py)

    @property
    def latent_frames(self) -> int:
        return self.video.shape[2]

    def to_source_size(self, pixels: torch.Tensor) -> torch.Tensor:
        width, height = self.size
        if pixels.shape[-2:] == (height, width):
            return pixels
        frames = pixels[0].permute(1, 0, 2, 3)  # (T, 3, h, w): frames as a batch
        scaled = torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", antialias=True,
                                                 align_corners=False)
        return scaled.permute(1, 0, 2, 3).unsqueeze(0).clamp(-1, 1)


def extension_base(origin, models, manager, request, window: int) -> ExtensionBase:
    """`origin`: an origins.ExtendedVideo (the source MP4, its stream's facts, its saved latents if any)."""
    facts, source = origin.facts, origin.source
    saved = origin.source_latents
    if saved is not None:  # made here: its own latents and picture
        pixels = crop_to_bucket(request.image, request.method.resolution)
        return ExtensionBase(source, facts.frames, facts.fps, saved.start, saved.video, pixels,
                             (facts.width, facts.height))
    width, height = (max(16, round(side / 16) * 16) for side in (facts.width, facts.height))
    pixels = _resized(np.asarray(first_frame(source)), width, height)
    # Enough latent frames for the packed context and the first decode (two windows).
    wanted = min(max(CONTEXT_FRAMES, 2 * window), (facts.frames - 1) // 4 + 1)
    tail = np.stack([_resized(f, width, height) for f in last_frames(source, 4 * wanted - 3)])
    vae = models.vae
    with manager.use(vae):
        start = encode_latent(vae, pixels)
        x = torch.from_numpy(tail).float().div(127.5).sub(1).permute(3, 0, 1, 2).unsqueeze(0)
        with torch.no_grad():
            video = vae.encode(x.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        video = (video * vae.config.scaling_factor).float().cpu()
    return ExtensionBase(source, facts.frames, facts.fps, start, video, pixels, (facts.width, facts.height))


def _resized(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.LANCZOS))
