"""Pixels: decoding sections, blending their overlaps, the cheap preview, MP4 writing."""
from __future__ import annotations

import os
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from framepack_core.method.schedule import FPS
from framepack_core.settings import DEFAULTS

# A 16 -> 3 linear map from HunyuanVideo latents to approximate RGB in [-1, 1] (the widely
# used ComfyUI factors): a preview at every step without running the VAE.
_PREVIEW_WEIGHTS = (
    (-0.0395, -0.0331, 0.0445), (0.0696, 0.0795, 0.0518), (0.0135, -0.0945, -0.0282),
    (0.0108, -0.0250, -0.0765), (-0.0209, 0.0032, 0.0224), (-0.0804, -0.0254, -0.0639),
    (-0.0991, 0.0271, -0.0669), (-0.0646, -0.0422, -0.0400), (-0.0696, -0.0595, -0.0894),
    (-0.0799, -0.0208, -0.0375), (0.1166, 0.1627, 0.0962), (0.1165, 0.0432, 0.0407),
    (-0.2315, -0.1920, -0.1355), (-0.0270, 0.0401, -0.0821), (-0.0616, -0.0997, -0.0727),
    (0.0249, -0.0469, -0.1703),
)
_PREVIEW_BIAS = (0.0259, -0.0192, -0.0761)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """(1, 16, T, h, w) scaled latents -> (1, 3, 4T-3, 8h, 8w) float32 pixels on the CPU."""
    scaled = latents / vae.config.scaling_factor
    pixels = vae.decode(scaled.to(device=vae.device, dtype=vae.dtype)).sample
    return pixels.float().cpu()


def blend_before(new: torch.Tensor, old: torch.Tensor, overlap: int) -> torch.Tensor:
    """Inverted order: `new` precedes `old` in time; across the overlap, `new` fades out."""
    a = torch.linspace(1, 0, overlap, dtype=new.dtype).view(1, 1, -1, 1, 1)
    blended = a * new[:, :, -overlap:] + (1 - a) * old[:, :, :overlap]
    return torch.cat([new[:, :, :-overlap], blended, old[:, :, overlap:]], dim=2)


def blend_after(old: torch.Tensor, new: torch.Tensor, overlap: int) -> torch.Tensor:
    """Forward order: `new` follows `old`; across the overlap, `old` fades out."""
    return blend_before(old, new, overlap)


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 by round((x + 1) * 127.5), clamped."""
    frames = torch.round((pixels[0].float() + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    return frames.permute(1, 2, 3, 0).contiguous().numpy()


@torch.no_grad()
def latent_preview(latents: torch.Tensor) -> np.ndarray:
    """(1, 16, T, h, w) -> (h, T*w, 3) uint8: every frame of the section side by side."""
    weight = torch.tensor(_PREVIEW_WEIGHTS, dtype=torch.float32).T[:, :, None, None, None]
    rgb = torch.nn.functional.conv3d(latents.float().cpu(), weight, torch.tensor(_PREVIEW_BIAS))
    rgb = ((rgb[0] + 1) * 127.5).clamp(0, 255).to(torch.uint8)  # (3, T, h, w)
    return rgb.permute(2, 1, 3, 0).flatten(1, 2).contiguous().numpy()


def write_mp4(frames: np.ndarray, path: str | os.PathLike, crf: int = DEFAULTS["crf"], fps: int = FPS,
              metadata: dict[str, str] | None = None) -> Path:
    """H.264 / yuv420p MP4, written to a temporary name and renamed into place.

    A failed or interrupted write therefore never leaves a broken file over an old one.
    """
    path = Path(path)
    count, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
    params = ["-crf", str(int(crf)), "-preset", "medium"]
    for key, value in (metadata or {}).items():
        params += ["-metadata", f"{key}={value}"]
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p", output_params=params, macro_block_size=2, ffmpeg_log_level="error",
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path
