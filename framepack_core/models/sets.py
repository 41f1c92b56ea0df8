"""The model sets (FramePack I2V, FramePack F1, tiny): which repositories, subfolders and dtypes.

Plain tables; loading them is `loading.py`'s work, building the tiny twin `tiny.py`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import (
    DEFAULT_PROMPT_TEMPLATE,
)

from framepack_core.settings import DEFAULT_MODES, SamplingMode

if TYPE_CHECKING:
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import (
        CLIPTextModel,
        LlamaModel,
        PreTrainedTokenizerBase,
        SiglipImageProcessorPil,
        SiglipVisionModel,
    )

# The tiny set's own tokenizer and template (tiny.py builds the tokenizer).
TINY_PROMPT_TEMPLATE = "<|system|>Describe the video.<|user|>{}<|end|>"
# Tokens before '{}': BOS, <|system|>, 17 for "Describe the video.", <|user|>.
# tests/models/test_models.py recomputes it from the tokenizer.
TINY_CROP_START = 20

MODELS_DIR_ENV = "FRAMEPACK_MODELS_DIR"


@dataclass(frozen=True)
class Source:
    repo_id: str
    subfolder: str | None


@dataclass(frozen=True)
class ModelSetSpec:
    name: str
    default_mode: SamplingMode
    sources: dict[str, Source]
    dtypes: dict[str, torch.dtype]
    prompt_template: str  # one '{}' for the prompt
    crop_start: int  # template tokens before the prompt
    approx_gb: float  # download size, for messages


@dataclass
class Models:
    spec: ModelSetSpec
    text_encoder: LlamaModel
    # Read from its tokenizer.json as is (loading.py): Llama 3's byte-level BPE, or tiny's own.
    tokenizer: PreTrainedTokenizerBase
    text_encoder_2: CLIPTextModel
    tokenizer_2: PreTrainedTokenizerBase  # CLIPTokenizer
    vae: AutoencoderKLHunyuanVideo
    image_encoder: SiglipVisionModel
    feature_extractor: SiglipImageProcessorPil
    transformer: HunyuanVideoFramepackTransformer3DModel


_HUNYUAN = "hunyuanvideo-community/HunyuanVideo"
_REDUX = "lllyasviel/flux_redux_bfl"
_GB = {"text_encoder": 16.0, "text_encoder_2": 0.25, "vae": 0.5, "image_encoder": 0.9, "transformer": 25.7}


def _sources(transformer_repo: str) -> dict[str, Source]:
    return {
        "text_encoder": Source(_HUNYUAN, "text_encoder"), "tokenizer": Source(_HUNYUAN, "tokenizer"),
        "text_encoder_2": Source(_HUNYUAN, "text_encoder_2"), "tokenizer_2": Source(_HUNYUAN, "tokenizer_2"),
        "vae": Source(_HUNYUAN, "vae"),
        "image_encoder": Source(_REDUX, "image_encoder"), "feature_extractor": Source(_REDUX, "feature_extractor"),
        "transformer": Source(transformer_repo, None),
    }


def _real_set(name: str, transformer_repo: str) -> ModelSetSpec:
    half = torch.float16
    return ModelSetSpec(
        name, DEFAULT_MODES[name], _sources(transformer_repo),
        {"text_encoder": half, "text_encoder_2": half, "vae": half, "image_encoder": half,
         "transformer": torch.bfloat16},
        DEFAULT_PROMPT_TEMPLATE["template"], DEFAULT_PROMPT_TEMPLATE["crop_start"], round(sum(_GB.values()), 2))


# What each model set is made of, by its name (the names, once: settings.MODEL_SETS, which `--help` reads
# without torch; tests/test_models.py holds the two together).
MODEL_SPECS: dict[str, ModelSetSpec] = {
    "framepack": _real_set("framepack", "lllyasviel/FramePackI2V_HY"),
    "framepack-f1": _real_set("framepack-f1", "lllyasviel/FramePack_F1_I2V_HY_20250503"),
    # Same repositories and subfolders as 'framepack', resolved under the locally built folder.
    # float32: half precision is slow (and partly unsupported) on CPUs.
    "tiny": ModelSetSpec("tiny", DEFAULT_MODES["tiny"], _sources("lllyasviel/FramePackI2V_HY"),
                         dict.fromkeys(_GB, torch.float32), TINY_PROMPT_TEMPLATE, TINY_CROP_START, 0.0),
}

