"""Transformers of the FramePack class with random weights, and one section's inputs for them.

For benchmarks and tests of memory and speed, where what matters is the architecture and the
bytes, not what the weights say: the real 13B at its full size (built without a float32 detour),
or a small one that runs on a CPU with the real model's proportions of blocks to fixed part.
"""
from __future__ import annotations

import torch

from framepack_core.models.published import published
from framepack_core.settings import DEFAULTS

# Small enough for the CPU, with more blocks than the 13B's fixed part is big, so a third of the
# bytes holds the fixed part, three slots and a resident block (the real model is 97% blocks).
SMALL_CONFIG = dict(num_attention_heads=4, attention_head_dim=32, num_layers=4, num_single_layers=26,
                    num_refiner_layers=1, mlp_ratio=8.0, text_embed_dim=32, pooled_projection_dim=16,
                    rope_axes_dim=(8, 12, 12), image_proj_dim=24, has_image_proj=True, has_clean_x_embedder=True)
# The real transformer's published configuration (published.py).
FULL_CONFIG = dict(published("transformer").config)
REAL_PROMPT_TOKENS = 64  # of the 512 the engine pads the Llama features to
SIGLIP_TOKENS = 729


def transformer_class():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    return HunyuanVideoFramepackTransformer3DModel


def small_transformer(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformer_class()(**{**SMALL_CONFIG, **overrides}).eval()


def full_size_transformer(dtype=torch.bfloat16, seed: int = 0, std: float = 0.02, **overrides) -> torch.nn.Module:
    """The 13B architecture with random weights, built without initialising 13B parameters one by one."""
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # created in bf16 from the start: no 52 GB float32 detour
    try:
        with torch.device("meta"):
            model = transformer_class()(**{**FULL_CONFIG, **overrides})
    finally:
        torch.set_default_dtype(default_dtype)
    model = model.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    pool = (torch.randn(1 << 24, generator=generator) * std).to(dtype)  # tiled into every tensor: fast, not zero
    named = list(model.named_parameters()) + list(model.named_buffers())
    for shift, (name, tensor) in enumerate(named):
        flat = tensor.data.view(-1)
        for start in range(0, flat.numel(), pool.numel()):
            part = flat[start:start + pool.numel()]
            offset = (shift * 7919) % (pool.numel() - part.numel() + 1)
            part.copy_(pool[offset:offset + part.numel()])
        if is_norm_scale(name, tensor):
            flat.add_(1.0)  # real norm scales are near 1: q/k RMSNorm at 0.02 would make attention uniform
    return model


def is_norm_scale(name: str, tensor: torch.Tensor) -> bool:
    """A normalisation's scale (a 1-D weight; biases and matrices are not): near 1 in trained models,
    which keeps attention logits at their real size (kernels' quantisation error shows)."""
    return tensor.dim() == 1 and name.endswith("weight")


def section_inputs(config: dict, latent_height: int, latent_width: int, window: int = DEFAULTS["window"],
                   dtype=torch.float32, device="cpu", seed: int = 0) -> dict:
    """One denoising call's arguments, as the engine makes them for the last inverted section."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    # pre[1] window[K] post[1] 2x[2] 4x[16] (padding 0; the token count is the same for any padding)
    positions = torch.arange(1 + window + 1 + 2 + 16).split([1, window, 1, 2, 16])
    pre, noisy, post, two, four = (p.to(device) for p in positions)
    mask = torch.zeros(1, 512, dtype=torch.bool, device=device)
    mask[:, :REAL_PROMPT_TOKENS] = True
    h, w = latent_height, latent_width
    return dict(
        hidden_states=rand(1, 16, window, h, w), timestep=torch.tensor([900.0], device=device, dtype=dtype),
        encoder_hidden_states=rand(1, 512, config["text_embed_dim"]), encoder_attention_mask=mask,
        pooled_projections=rand(1, config["pooled_projection_dim"]),
        image_embeds=rand(1, SIGLIP_TOKENS if config["image_proj_dim"] == 1152 else 16, config["image_proj_dim"]),
        indices_latents=noisy, guidance=torch.tensor([10000.0], device=device, dtype=dtype),
        latents_clean=rand(1, 16, 2, h, w), indices_latents_clean=torch.cat([pre, post]),
        latents_history_2x=rand(1, 16, 2, h, w), indices_latents_history_2x=two,
        latents_history_4x=rand(1, 16, 16, h, w), indices_latents_history_4x=four,
        return_dict=False)


def token_count(latent_height: int, latent_width: int, window: int = DEFAULTS["window"],
                image_tokens: int = SIGLIP_TOKENS) -> int:
    """Tokens in one call: the noisy window at 1x2x2, clean 1x, 2x and 4x context, prompt and image."""
    def patches(frames, t, s):
        return -(-frames // t) * -(-latent_height // s) * -(-latent_width // s)
    return (patches(window, 1, 2) + patches(2, 1, 2) + patches(2, 2, 4) + patches(16, 4, 8)
            + REAL_PROMPT_TOKENS + image_tokens)
