"""The keyframes' latents and SigLIP embeddings, encoded once per run (method/keyframes.py uses them)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..media.pictures import resize_and_center_crop
from ..method.keyframes import Keyframe, KeyframeLatents, keyframe_image_embeds, plan_keyframes
from ..models.encoders import encode_latent, encode_siglip


@dataclass
class KeyframeInputs:
    start_embeds: torch.Tensor
    latents: KeyframeLatents | None = None  # None: no keyframes (run_sections' default)
    embeds: list[torch.Tensor] | None = None

    def image_embeds(self, index: int) -> torch.Tensor:
        """Section `index`'s (generation order) image embedding."""
        if self.latents is None:
            return self.start_embeds
        return keyframe_image_embeds(self.start_embeds, self.latents.plan[index], self.embeds)


def encode_keyframes(request, models, manager, pixels: np.ndarray, start_embeds: torch.Tensor,
                     sections: int) -> KeyframeInputs:
    """Each keyframe cropped to the start picture's size, then VAE- and SigLIP-encoded as the start picture is."""
    if not request.keyframes:
        return KeyframeInputs(start_embeds)
    height, width = pixels.shape[:2]
    crops = [resize_and_center_crop(picture, width, height) for picture, _, _ in request.keyframes]
    with manager.use(models.vae):
        latents = [encode_latent(models.vae, crop) for crop in crops]
    with manager.use(models.image_encoder):
        embeds = [encode_siglip(models.feature_extractor, models.image_encoder, crop) for crop in crops]
    plan = plan_keyframes([Keyframe(s, w) for _, s, w in request.keyframes], sections, request.method.window)
    return KeyframeInputs(start_embeds, KeyframeLatents(plan, latents), embeds)
