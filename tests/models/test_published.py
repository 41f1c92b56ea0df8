"""The real models' published configurations, built on the meta device: shapes, counts, bytes."""
import pytest
import torch

from framepack_core.models import published
from framepack_core.models.published import MODEL_KEYS, meta_model, parameter_bytes
from framepack_core.models.sets import MODEL_SPECS
from tests.support.parameters import parameter_count

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
    assert {p.dtype for p in params} == {MODEL_SPECS[model_set].dtypes[key]}
    assert parameter_count(model) == EXPECTED[key]
    assert parameter_bytes(model) == EXPECTED[key] * params[0].element_size()


def test_transformer_is_about_25_7_gb_in_bf16():
    model = meta_model("transformer")
    assert round(parameter_bytes(model) / 1e9, 1) == published.TRANSFORMER_BF16_GB
    # and sets.py's download figure for it says the same
    assert MODEL_SPECS["framepack"].dtypes["transformer"] == torch.bfloat16


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


# --------------------------------------------------------------------------- CLIP-L's pooling


def _small_clip(**overrides):
    """CLIP-L's published text configuration at toy width: same vocabulary and special ids."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = dict(published.published("text_encoder_2").config)
    config.update(hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
                  num_attention_heads=2, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CLIPTextModel(CLIPTextConfig(**config)).eval()


def test_real_clip_config_takes_the_legacy_argmax_pooling():
    assert published.published("text_encoder_2").config["eos_token_id"] == 2
    clip = _small_clip()
    assert clip.config.eos_token_id == 2  # CLIPTextModel's branch that pools at argmax(id)
    # No <|endoftext|> here: the legacy branch pools at the highest id (49406 at position 1), the
    # other branch would look for eos 49407, find none and pool at position 0.
    ids = torch.tensor([[320, 49406, 5000, 1000]])
    with torch.no_grad():
        out = clip(input_ids=ids)
        assert torch.equal(out.pooler_output[0], out.last_hidden_state[0, 1])
        other = _small_clip(eos_token_id=49407)(input_ids=ids)
        assert torch.equal(other.pooler_output[0], other.last_hidden_state[0, 0])


@pytest.mark.parametrize("pad", [49407, 0])  # the repository's tokenizer pads with <|endoftext|>, open_clip with 0
def test_legacy_pooling_lands_on_the_first_endoftext_of_a_real_prompt(pad):
    clip = _small_clip()
    # <|startoftext|> a cat walks <|endoftext|> then padding to 77, as the tokenizers give it
    ids = torch.full((1, 77), pad)
    ids[0, :5] = torch.tensor([49406, 320, 2368, 8192, 49407])
    with torch.no_grad():
        out = clip(input_ids=ids)
    assert torch.equal(out.pooler_output[0], out.last_hidden_state[0, 4])
    assert not torch.equal(out.pooler_output[0], out.last_hidden_state[0, 5])
