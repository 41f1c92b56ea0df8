"""One frame through an upscaler in tiles, so that a 6 GB card (or the CPU) holds any frame size.

Each tile is cut with `overlap` pixels of its neighbours around it (where the frame has them), upscaled, and
only its own part of the result kept: every output pixel is computed with at least `overlap` input pixels of
context on each side, so no seam shows where tiles meet and the result does not depend on the tile order.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MIN_TILE, MAX_TILE = 64, 512
# Bytes per input pixel of a tile while an upscaler runs, per feature channel (activations kept at once by an
# RRDB block's dense connections, float32, with headroom); a cautious estimate, measured against on a GPU.
_BYTES_PER_PIXEL_CHANNEL = 4 * 12


def tile_size(budget_bytes: int | None, model: torch.nn.Module, scale: int) -> int:
    """The largest tile side (a multiple of 16) whose upscaling fits `budget_bytes` beside the weights.
    None: no budget (the CPU): MAX_TILE."""
    if budget_bytes is None:
        return MAX_TILE
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    channels = max((m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)), default=64)
    per_pixel = _BYTES_PER_PIXEL_CHANNEL * channels + 4 * 3 * scale * scale * 2
    side = math.isqrt(max(budget_bytes - weights, 0) // per_pixel)
    return max(MIN_TILE, min(MAX_TILE, side // 16 * 16))


@torch.no_grad()
def upscale_frame(upscaler, frame: np.ndarray, tile: int, overlap: int = 16, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> np.ndarray:
    """(H, W, 3) uint8 -> (H*s, W*s, 3) uint8 by `upscaler` (a spandrel ImageModelDescriptor)."""
    scale = upscaler.scale
    height, width, _ = frame.shape
    image = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].to(device=device, dtype=dtype) / 255
    out = np.empty((height * scale, width * scale, 3), np.uint8)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(bottom + overlap, height), min(right + overlap, width)
            result = _run(upscaler, image[:, :, y0:y1, x0:x1])
            keep = result[:, :, (top - y0) * scale:(bottom - y0) * scale, (left - x0) * scale:(right - x0) * scale]
            out[top * scale:bottom * scale, left * scale:right * scale] = _to_uint8(keep)
    return out


def _run(upscaler, piece: torch.Tensor) -> torch.Tensor:
    """The model on one piece, padded (edge pixels repeated) to the sizes its architecture needs, cut back after."""
    needs = upscaler.size_requirements
    height, width = piece.shape[2:]
    multiple = max(needs.multiple_of, 1)
    target_h = max(needs.minimum, -(-height // multiple) * multiple)
    target_w = max(needs.minimum, -(-width // multiple) * multiple)
    if needs.square:
        target_h = target_w = max(target_h, target_w)
    if (target_h, target_w) != (height, width):
        piece = F.pad(piece, (0, target_w - width, 0, target_h - height), mode="replicate")
    result = upscaler(piece)
    return result[:, :, :height * upscaler.scale, :width * upscaler.scale]


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return (pixels[0].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
