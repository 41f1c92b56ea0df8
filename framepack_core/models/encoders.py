"""Turning a prompt and a picture into the tensors the transformer is conditioned on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from framepack_core.method.sections import PromptConditioning

LLAMA_TOKENS = 256  # prompt tokens kept after the template's system part
PROMPT_LENGTH = 512  # what the transformer receives: Llama features cropped or zero padded
CLIP_TOKENS = 77


@dataclass(frozen=True)
class EncodedPrompt:
    conditioning: PromptConditioning
    truncated: bool  # the prompt was longer than the Llama encoder keeps


@torch.no_grad()
def encode_prompt(models, prompt: str) -> EncodedPrompt:
    spec = models.spec
    tokenizer, llama = models.tokenizer, models.text_encoder
    text = spec.prompt_template.format(prompt)
    input_ids, attention_mask, truncated = template_ids(tokenizer, text, LLAMA_TOKENS + spec.crop_start)
    real_tokens = int(attention_mask.sum())
    out = llama(input_ids=input_ids.to(llama.device), attention_mask=attention_mask.to(llama.device),
                output_hidden_states=True)
    # The third-from-last layer, without the template's system tokens and without padding.
    features = out.hidden_states[-3][:, spec.crop_start:real_tokens]
    embeds, mask = crop_or_pad(features, PROMPT_LENGTH)

    clip_ids = models.tokenizer_2(prompt, padding="max_length", max_length=CLIP_TOKENS, truncation=True,
                                  return_tensors="pt").input_ids
    pooled = models.text_encoder_2(clip_ids.to(models.text_encoder_2.device)).pooler_output
    return EncodedPrompt(PromptConditioning(embeds.cpu(), mask.cpu(), pooled.cpu()), truncated)


def template_ids(tokenizer, text: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(1, max_length) ids and mask of BOS + `text`, right padded; and whether `text` was cut.

    BOS is put here, not left to the tokenizer: whether a tokenizer adds it depends on its
    files (transformers 5 follows tokenizer.json's post-processor), and crop_start counts it.
    """
    ids = with_bos(tokenizer, text)
    truncated = len(ids) > max_length
    ids = ids[:max_length]
    count = len(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((1, max_length), pad, dtype=torch.long)
    input_ids[0, :count] = torch.tensor(ids, dtype=torch.long)
    attention_mask = torch.zeros((1, max_length), dtype=torch.long)
    attention_mask[0, :count] = 1
    return input_ids, attention_mask, truncated


def with_bos(tokenizer, text: str) -> list[int]:
    return [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids


def crop_or_pad(features: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, count, dim = features.shape
    if count >= length:
        return features[:, :length], torch.ones(batch, length, dtype=torch.bool, device=features.device)
    padded = features.new_zeros(batch, length, dim)
    padded[:, :count] = features
    mask = torch.zeros(batch, length, dtype=torch.bool, device=features.device)
    mask[:, :count] = True
    return padded, mask


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, 1, H, W) float32 in [-1, 1]."""
    return (torch.from_numpy(np.array(pixels)).float() / 127.5 - 1).permute(2, 0, 1)[None, :, None]


@torch.no_grad()
def encode_latent(vae, pixels: np.ndarray) -> torch.Tensor:
    """The posterior mean (not a sample), so that a seed alone fixes the video."""
    x = pixels_to_tensor(pixels).to(device=vae.device, dtype=vae.dtype)
    return (vae.encode(x).latent_dist.mode() * vae.config.scaling_factor).float().cpu()


@torch.no_grad()
def encode_siglip(feature_extractor, image_encoder, pixels: np.ndarray) -> torch.Tensor:
    inputs = feature_extractor.preprocess(images=pixels, return_tensors="pt")
    values = inputs["pixel_values"].to(device=image_encoder.device, dtype=image_encoder.dtype)
    return image_encoder(pixel_values=values).last_hidden_state.cpu()


def set_vae_tiling(vae, tiled: bool) -> None:
    """Tiles change pixels, so whoever decodes or encodes says which it wants (the tiny VAE has none)."""
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if tiled else vae.disable_tiling()
