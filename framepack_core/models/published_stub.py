"""Stand-in for `published.py` (issue 11 writes it: the real configurations, each with its source)
until that module is merged; `app.py check` imports `published.meta_model` first and this only
when it is missing. Same interface: meta_model(key, model_set) -> nn.Module on the meta device.

Values: the repositories' config.json files as bench/offload.py already quotes them
(lllyasviel/FramePackI2V_HY; hunyuanvideo-community/HunyuanVideo text_encoder, text_encoder_2,
vae; lllyasviel/flux_redux_bfl image_encoder = google/siglip-so400m-patch14-384's vision tower).
"""
from __future__ import annotations

import torch

from .sets import MODEL_SETS

_TRANSFORMER = dict(num_attention_heads=24, attention_head_dim=128, num_layers=20, num_single_layers=40,
                    num_refiner_layers=2, mlp_ratio=4.0, text_embed_dim=4096, pooled_projection_dim=768,
                    rope_axes_dim=(16, 56, 56), image_proj_dim=1152, has_image_proj=True, has_clean_x_embedder=True)


def _build(key: str) -> torch.nn.Module:
    import diffusers
    import transformers

    if key == "transformer":
        return diffusers.HunyuanVideoFramepackTransformer3DModel(**_TRANSFORMER)
    if key == "vae":
        return diffusers.AutoencoderKLHunyuanVideo()
    if key == "text_encoder":
        return transformers.LlamaModel(transformers.LlamaConfig(
            vocab_size=128320, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0))
    if key == "text_encoder_2":
        return transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77))
    if key == "image_encoder":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=384, patch_size=14))
    raise ValueError(f"Unknown model {key!r}.")


def meta_model(key: str, model_set: str = "framepack") -> torch.nn.Module:
    with torch.device("meta"):
        model = _build(key)
    return torch.nn.Module.to(model, MODEL_SETS[model_set].dtypes[key]).eval().requires_grad_(False)
