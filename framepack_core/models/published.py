"""The published configurations of the real models, and building them on the meta device.

The real weights are 43 GB; these tables let the app (`app.py check`) and the tests see the real
models' shapes, parameter counts and bytes without them. Each table is the repository's
config.json (fields that change the architecture or its conditioning), with its source.
`meta_model(key, set)` builds the model class that `loading.py` loads, with no storage, in the
dtype `sets.py` loads it in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .sets import MODEL_SPECS

# Keys as in sets.py (weights only: tokenizers and the image processor hold no parameters).
MODEL_KEYS = ("transformer", "text_encoder", "text_encoder_2", "vae", "image_encoder")


@dataclass(frozen=True)
class Published:
    cls: str  # 'diffusers.X' or 'transformers.X': the class loading.py uses
    config: dict[str, Any]
    source: str  # where the values were read


# huggingface.co/lllyasviel/FramePackI2V_HY/config.json (class HunyuanVideoTransformer3DModelPacked,
# loaded by diffusers as HunyuanVideoFramepackTransformer3DModel). The values are also FramePack's
# own class defaults (github.com/lllyasviel/FramePack diffusers_helper/models/hunyuan_video_packed.py)
# except has_image_proj / has_clean_x_embedder, which the checkpoint turns on.
_FRAMEPACK_TRANSFORMER = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 24, "attention_head_dim": 128,
    "num_layers": 20, "num_single_layers": 40, "num_refiner_layers": 2, "mlp_ratio": 4.0,
    "patch_size": 2, "patch_size_t": 1, "qk_norm": "rms_norm", "guidance_embeds": True,
    "text_embed_dim": 4096, "pooled_projection_dim": 768, "rope_theta": 256.0, "rope_axes_dim": (16, 56, 56),
    "has_image_proj": True, "image_proj_dim": 1152, "has_clean_x_embedder": True,
}

PUBLISHED: dict[str, dict[str, Published]] = {
    "framepack": {
        "transformer": Published(
            "diffusers.HunyuanVideoFramepackTransformer3DModel", _FRAMEPACK_TRANSFORMER,
            "huggingface.co/lllyasviel/FramePackI2V_HY config.json (as quoted by public loaders; the hub "
            "itself was not reachable from here)"),
    },
    "framepack-f1": {
        # F1 is a fine-tune of the same network: demo_gradio_f1.py loads it with the same class and
        # no override, and its three safetensors shards hold the same tensors.
        "transformer": Published(
            "diffusers.HunyuanVideoFramepackTransformer3DModel", _FRAMEPACK_TRANSFORMER,
            "huggingface.co/lllyasviel/FramePack_F1_I2V_HY_20250503 config.json: same architecture as "
            "FramePackI2V_HY (not fetched directly)"),
    },
}

_SHARED = {
    # huggingface.co/hunyuanvideo-community/HunyuanVideo text_encoder/config.json: the Llama 3 8B
    # text part of llava-llama-3-8b (HunyuanVideo's MLLM), vocabulary padded to 128320.
    "text_encoder": Published("transformers.LlamaModel", {
        "vocab_size": 128320, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 128000, "eos_token_id": 128001,
    }, "hunyuanvideo-community/HunyuanVideo text_encoder/config.json (copies: magespace/hyvideo-diffusers, "
       "FastVideo/FastHunyuan)"),
    # text_encoder_2/config.json: openai/clip-vit-large-patch14's text tower. eos_token_id 2 is the
    # legacy value: CLIPTextModel then pools at the argmax token id, not at the first EOS (id 49407).
    "text_encoder_2": Published("transformers.CLIPTextModel", {
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 768,
        "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }, "hunyuanvideo-community/HunyuanVideo text_encoder_2/config.json (copy: magespace/hyvideo-diffusers)"),
    # vae/config.json (identical copies: jbilcke-hf/HunyuanVideo-HFIE, newgenai79/HunyuanVideo-int4).
    "vae": Published("diffusers.AutoencoderKLHunyuanVideo", {
        "in_channels": 3, "out_channels": 3, "latent_channels": 16,
        "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "act_fn": "silu",
        "norm_num_groups": 32, "scaling_factor": 0.476986, "spatial_compression_ratio": 8,
        "temporal_compression_ratio": 4, "mid_block_add_attention": True,
    }, "hunyuanvideo-community/HunyuanVideo vae/config.json"),
    # lllyasviel/flux_redux_bfl image_encoder/config.json: google/siglip-so400m-patch14-384's vision tower.
    "image_encoder": Published("transformers.SiglipVisionModel", {
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
        "num_channels": 3, "image_size": 384, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    }, "lllyasviel/flux_redux_bfl image_encoder/config.json (= google/siglip-so400m-patch14-384 vision_config)"),
}
for _set in PUBLISHED.values():
    for _key, _published in _SHARED.items():
        _set.setdefault(_key, _published)

# Published figures the tests check the tables against.
TRANSFORMER_BF16_GB = 25.7  # FramePackI2V_HY: three safetensors shards, about 25.7 GB in all


def published(key: str, model_set: str = "framepack") -> Published:
    if model_set not in PUBLISHED:
        real = ", ".join(PUBLISHED)
        raise ValueError(f"No published configuration for the model set {model_set!r}; these have one: {real}.")
    if key not in MODEL_KEYS:
        raise ValueError(f"Unknown model {key!r}; choose one of {', '.join(MODEL_KEYS)}.")
    return PUBLISHED[model_set][key]


def meta_model(key: str, model_set: str = "framepack") -> torch.nn.Module:
    """The model `key` of `model_set`, built on the meta device (no storage) in the dtype it loads in.

    Real sets from their published configuration; 'tiny' from tiny.py's own builders.
    """
    if model_set not in MODEL_SPECS:
        raise ValueError(f"Unknown model set {model_set!r}; choose one of {', '.join(MODEL_SPECS)}.")
    if model_set == "tiny":
        # Small: built for real (its builders read weights), under tiny's seeded generator so the
        # caller's random state is untouched, then its storage dropped.
        model = _build_tiny(key).to("meta")
    else:
        with torch.device("meta"):
            model = _build(published(key, model_set))
    # nn.Module.to, not diffusers' override: that one warns about from_pretrained, irrelevant here.
    return torch.nn.Module.to(model, MODEL_SPECS[model_set].dtypes[key]).eval().requires_grad_(False)


def _build(entry: Published) -> torch.nn.Module:
    library, name = entry.cls.split(".")
    if library == "diffusers":
        import diffusers

        return getattr(diffusers, name)(**entry.config)
    import transformers

    model_cls = getattr(transformers, name)
    config = model_cls.config_class(**entry.config)
    if name == "LlamaModel":
        config._attn_implementation = "sdpa"
    return model_cls(config)


def _build_tiny(key: str) -> torch.nn.Module:
    from . import tiny

    if key not in MODEL_KEYS:
        raise ValueError(f"Unknown model {key!r}; choose one of {', '.join(MODEL_KEYS)}.")
    builders = {"transformer": tiny._transformer, "vae": tiny._vae, "image_encoder": tiny._siglip,
                "text_encoder": lambda: tiny._llama(tiny._llama_tokenizer()),
                "text_encoder_2": lambda: tiny._clip(tiny._clip_tokenizer())}
    return tiny._seeded(builders[key])


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters in their dtype: what the weights take in memory and, near enough, on disk."""
    return sum(p.numel() * p.element_size() for p in module.parameters())
