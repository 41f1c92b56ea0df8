"""What an extension continues from: the source video's latents, start latent and picture.

A video this app made keeps its latents beside it: those are the history, bit for bit. Any other
video (H.264, yuv420p) gets a history by VAE-encoding its last frames, at a size the model takes
(each side rounded to a multiple of 16); the new frames are scaled back to the source's size so
they join its stream.

A branch continues from a frame `cut` inside the source (one of its cut points: its frames before
it are copied as they are). Saved latents are cut at the latent frame holding that frame: latent 0
is frame 0, latent k >= 1 is frames 4k-3 .. 4k (the VAE's causal layout). When the cut falls inside
a latent's four frames, the new part's first `skip` frames (those the source already shows) are
left out, so the video's clock runs on without a jump.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..media.pictures import crop_to_bucket
from ..media.video_files import first_frame, last_frames
from ..method.schedule import CONTEXT_FRAMES
from ..models.encoders import encode_latent


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
    cut: bool = False  # a branch: only the source's first `frames` frames are kept
    skip: int = 0  # new frames left out at the start: the source shows them before the cut (0-3)

    @property
    def latent_frames(self) -> int:
        return self.video.shape[2]

    def to_source_size(self, pixels: torch.Tensor) -> torch.Tensor:
        return to_size(pixels, *self.size)


def extension_base(origin, models, manager, request, window: int) -> ExtensionBase:
    """`origin`: an origins.ExtendedVideo (the source MP4, its stream's facts, its saved latents if any)."""
    facts, source, cut = origin.facts, origin.source, origin.cut
    frames = facts.frames if cut is None else cut
    saved = origin.source_latents
    if saved is not None:  # made here: its own latents and picture
        pixels = crop_to_bucket(request.image, request.method.resolution)
        video, skip = latents_before(saved.video, frames)
        return ExtensionBase(source, frames, facts.fps, saved.start, video, pixels, (facts.width, facts.height),
                             cut=cut is not None, skip=skip)
    width, height = working_size(facts.width, facts.height, request.method.resolution)
    pixels = resized(np.asarray(first_frame(source)), width, height)
    # Enough latent frames for the packed context and the first decode (two windows).
    wanted = min(max(CONTEXT_FRAMES, 2 * window), (frames - 1) // 4 + 1)
    tail = np.stack([resized(f, width, height) for f in last_frames(source, 4 * wanted - 3, end=frames)])
    vae = models.vae
    with manager.use(vae):
        start = encode_latent(vae, pixels)
        x = torch.from_numpy(tail).float().div(127.5).sub(1).permute(3, 0, 1, 2).unsqueeze(0)
        with torch.no_grad():
            video = vae.encode(x.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        video = (video * vae.config.scaling_factor).float().cpu()
    return ExtensionBase(source, frames, facts.fps, start, video, pixels, (facts.width, facts.height),
                         cut=cut is not None)


def working_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The size a video from elsewhere is worked at: its own, each side rounded to 16, unless that holds more
    pixels than the run's resolution bucket (about resolution x resolution): then scaled down to that area, its
    shape kept (a 4K or phone clip would otherwise cost gigabytes for nothing the run asked for)."""
    own = tuple(max(16, round(side / 16) * 16) for side in (width, height))
    if own[0] * own[1] <= resolution * resolution:
        return own
    scale = resolution / (width * height) ** 0.5
    return tuple(max(16, round(side * scale / 16) * 16) for side in (width, height))


def latents_before(video: torch.Tensor, frames: int) -> tuple[torch.Tensor, int]:
    """(the latent frames whose pixels all lie before frame `frames`, how many frames before it the
    next latent holds): a video of F frames made here has (F - 1) / 4 + 1 latent frames."""
    kept = (frames - 1) // 4 + 1
    return video[:, :, :kept], frames - (4 * (kept - 1) + 1)


def frames_of_latents(latent_frames: int) -> int:
    return 4 * (latent_frames - 1) + 1


def to_size(pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Decoded frames (1, 3, T, h, w) scaled to width x height (as they are when already that size)."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    frames = pixels[0].permute(1, 0, 2, 3)  # (T, 3, h, w): frames as a batch
    scaled = torch.nn.functional.interpolate(frames, size=(height, width), mode="bilinear", antialias=True,
                                             align_corners=False)
    return scaled.permute(1, 0, 2, 3).unsqueeze(0).clamp(-1, 1)


def resized(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.LANCZOS))
