"""The real models' published configurations, built on the meta device: shapes, counts, bytes."""
import pytest
import torch

from framepack_core.models import published
from framepack_core.models.published import MODEL_KEYS, meta_model, parameter_bytes, parameter_count
from framepack_core.models.sets import MODEL_SETS

# Parameter counts of the real models. Llama: Llama 3 8B's published 8,030,261,248 less its LM head
# (128256 x 4096, which LlamaModel has not) plus the 64 rows HunyuanVideo pads its vocabulary with.
LLAMA3_8B = 8_030_261_248
EXPECTED = {
    "transformer": 12_874_314_816,  # "13B"
    "text_encoder": LLAMA3_8B - 128256 * 4096 + 64 * 4096,
    "text_encoder_2": 123_060_480,  # CLIP ViT-L/14 text tower, 123M
    "vae": 246_478_803,
    "image_encoder": 428_225_600,  # SigLIP so400m vision tower
}


@pytest.mark.parametrize("model_set", ["framepack", "framepack-f1"])
@pytest.mark.parametrize("key", MODEL_KEYS)
def test_meta_models_have_the_published_size_and_dtype(model_set, key):
    model = meta_model(key, model_set)
    params = list(model.parameters())
    assert all(p.device.type == "meta" for p in params)
    assert {p.dtype for p in params} == {MODEL_SETS[model_set].dtypes[key]}
    assert parameter_count(model) == EXPECTED[key]
    assert parameter_bytes(model) == EXPECTED[key] * params[0].element_size()


def test_transformer_is_about_25_7_gb_in_bf16():
    model = meta_model("transformer")
    assert round(parameter_bytes(model) / 1e9, 1) == published.TRANSFORMER_BF16_GB
    # and sets.py's download figure for it says the same
    assert MODEL_SETS["framepack"].dtypes["transformer"] == torch.bfloat16


def test_the_classes_are_those_loading_uses():
    import diffusers
    import transformers

    classes = {"transformer": diffusers.HunyuanVideoFramepackTransformer3DModel,
               "vae": diffusers.AutoencoderKLHunyuanVideo, "text_encoder": transformers.LlamaModel,
               "text_encoder_2": transformers.CLIPTextModel, "image_encoder": transformers.SiglipVisionModel}
    for key, cls in classes.items():
        assert type(meta_model(key)) is cls


def test_tiny_meta_models_match_the_built_tiny_set(tiny_models):
    for key in MODEL_KEYS:
        real = getattr(tiny_models, key)
        meta = meta_model(key, "tiny")
        assert [(n, p.shape, p.dtype) for n, p in meta.named_parameters()] == \
               [(n, p.shape, p.dtype) for n, p in real.named_parameters()]


def test_meta_model_leaves_the_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    meta_model("transformer", "tiny")
    assert torch.equal(torch.rand(3), expected)


def test_unknown_names_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match="Unknown model set 'nope'"):
        meta_model("vae", "nope")
    with pytest.raises(ValueError, match="Unknown model 'tokenizer'"):
        meta_model("tokenizer")
    with pytest.raises(ValueError, match="Unknown model 'tokenizer'"):
        meta_model("tokenizer", "tiny")
