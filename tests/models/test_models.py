"""Model sets: the published repositories, the tiny twin, and the loading path. Offline throughout."""
import shutil
import socket
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer, LlamaModel, PreTrainedTokenizerFast, SiglipVisionModel

from framepack_core.failures import ModelsUnavailableError
from framepack_core.models import tiny
from framepack_core.models.loading import load_models
from framepack_core.models.sets import MODEL_SPECS, TINY_CROP_START, Source

HUNYUAN, REDUX = "hunyuanvideo-community/HunyuanVideo", "lllyasviel/flux_redux_bfl"
KEYS = ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae", "image_encoder", "feature_extractor",
        "transformer"]


@pytest.fixture(scope="module")
def tiny_dir():
    return tiny.ensure_tiny_models()  # the session's private FRAMEPACK_CACHE (tests/conftest.py)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test instead of reaching out."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_hub(monkeypatch, tmp_path, no_network):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "FRAMEPACK_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


@pytest.mark.parametrize("name,mode,transformer", [
    ("framepack", "inverted", "lllyasviel/FramePackI2V_HY"),
    ("framepack-f1", "forward", "lllyasviel/FramePack_F1_I2V_HY_20250503"),
])
def test_real_sets_name_the_published_weights(name, mode, transformer):
    spec = MODEL_SPECS[name]
    assert spec.name == name and spec.default_mode == mode
    assert spec.sources == {
        "text_encoder": Source(HUNYUAN, "text_encoder"), "tokenizer": Source(HUNYUAN, "tokenizer"),
        "text_encoder_2": Source(HUNYUAN, "text_encoder_2"), "tokenizer_2": Source(HUNYUAN, "tokenizer_2"),
        "vae": Source(HUNYUAN, "vae"), "image_encoder": Source(REDUX, "image_encoder"),
        "feature_extractor": Source(REDUX, "feature_extractor"), "transformer": Source(transformer, None),
    }
    half = torch.float16
    assert spec.dtypes == {"text_encoder": half, "text_encoder_2": half, "vae": half, "image_encoder": half,
                           "transformer": torch.bfloat16}
    assert spec.prompt_template == DEFAULT_PROMPT_TEMPLATE["template"]  # its prefix is checked on real tokenizers
    assert 40 < spec.approx_gb < 46


def test_the_specs_are_of_the_settings_tables_model_sets_each_with_its_own_mode():
    from framepack_core.settings import DEFAULT_MODES, MODEL_SETS, SamplingMode

    assert tuple(MODEL_SPECS) == MODEL_SETS == ("framepack", "framepack-f1", "tiny")
    assert {name: spec.default_mode for name, spec in MODEL_SPECS.items()} == DEFAULT_MODES == {
        "framepack": SamplingMode.INVERTED, "framepack-f1": SamplingMode.FORWARD, "tiny": SamplingMode.INVERTED}


def test_tiny_set_is_the_framepack_layout_in_float32():
    spec = MODEL_SPECS["tiny"]
    assert spec.sources == MODEL_SPECS["framepack"].sources and spec.default_mode == "inverted"
    assert set(spec.dtypes.values()) == {torch.float32}
    assert spec.prompt_template.count("{}") == 1


def test_tiny_loads_with_the_real_classes(tiny_models):
    m = tiny_models
    assert isinstance(m.text_encoder, LlamaModel) and isinstance(m.tokenizer, PreTrainedTokenizerFast)
    assert isinstance(m.text_encoder_2, CLIPTextModel) and isinstance(m.tokenizer_2, CLIPTokenizer)
    assert isinstance(m.vae, AutoencoderKLHunyuanVideo) and isinstance(m.image_encoder, SiglipVisionModel)
    assert isinstance(m.transformer, HunyuanVideoFramepackTransformer3DModel)
    assert type(m.feature_extractor).__name__.startswith("SiglipImageProcessor")
    assert m.vae.config.latent_channels == 16 and m.vae.config.scaling_factor == 0.476986
    t = m.transformer.config
    assert (t.in_channels, t.out_channels, t.text_embed_dim, t.pooled_projection_dim, t.image_proj_dim) == (
        16, 16, 32, 32, 32)
    assert t.has_image_proj and t.has_clean_x_embedder and t.guidance_embeds and t.image_condition_type is None
    for model in (m.text_encoder, m.text_encoder_2, m.vae, m.image_encoder, m.transformer):
        assert not model.training and model.device.type == "cpu" and model.dtype == torch.float32
        assert not any(p.requires_grad for p in model.parameters())
    assert m.text_encoder.config.num_hidden_layers >= 3  # hidden_states[-3] exists and is not the embedding


def test_tiny_crop_start_counts_the_template_prefix(tiny_models):
    tokenizer, spec = tiny_models.tokenizer, tiny_models.spec
    prefix = tokenizer(spec.prompt_template.split("{}")[0]).input_ids
    assert spec.crop_start == len(prefix) == TINY_CROP_START == 20
    assert prefix[0] == tokenizer.bos_token_id
    full = tokenizer(spec.prompt_template.format("a red fox jumps")).input_ids
    assert full[:spec.crop_start] == prefix and len(full) > spec.crop_start


def test_tiny_tokenizers_take_any_prompt_and_pad_right(tiny_models):
    prompt = "Ein Fuchs springt über den Zaun 🦊, 狐狸 — 100%!"
    llama = tiny_models.tokenizer(prompt, padding="max_length", max_length=80, truncation=True)
    assert tiny_models.tokenizer.unk_token_id not in llama.input_ids
    real = sum(llama.attention_mask)
    assert llama.attention_mask == [1] * real + [0] * (80 - real)
    assert llama.input_ids[real:] == [tiny_models.tokenizer.pad_token_id] * (80 - real)
    assert tiny_models.tokenizer.decode(llama.input_ids, skip_special_tokens=True) == prompt

    clip = tiny_models.tokenizer_2(prompt, padding="max_length", max_length=77, truncation=True,
                                   return_tensors="pt").input_ids
    assert clip.shape == (1, 77) and tiny_models.tokenizer_2.unk_token_id != clip[0, 1]
    eos = tiny_models.tokenizer_2.eos_token_id
    first_eos = int((clip[0] == eos).nonzero()[0])
    out = tiny_models.text_encoder_2(clip)
    assert torch.equal(out.pooler_output[0], out.last_hidden_state[0, first_eos])


def test_tiny_encoders_give_the_engine_shapes(tiny_models):
    m = tiny_models
    with torch.no_grad():
        ids = m.tokenizer(m.spec.prompt_template.format("waves roll in"), return_tensors="pt").input_ids
        features = m.text_encoder(ids, output_hidden_states=True).hidden_states[-3]
        assert features.shape == (1, ids.shape[1], 32) and features.std() > 0.3  # not drowned in noise
        image = m.feature_extractor.preprocess(images=torch.zeros(40, 60, 3, dtype=torch.uint8).numpy(),
                                               return_tensors="pt")["pixel_values"]
        assert image.shape == (1, 3, 32, 32)
        assert m.image_encoder(pixel_values=image).last_hidden_state.shape == (1, 16, 32)
        latent = m.vae.encode(torch.rand(1, 3, 1, 128, 128) * 2 - 1).latent_dist.mode()
        assert latent.shape == (1, 16, 1, 16, 16)
        assert m.vae.decode(torch.randn(1, 16, 2, 16, 16)).sample.shape == (1, 3, 5, 128, 128)


def transformer_inputs(h=8, w=12, image_embeds=None):
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[:, :30] = True
    return dict(
        hidden_states=torch.randn(1, 16, 9, h, w, generator=g), timestep=torch.tensor([900.0]),
        encoder_hidden_states=torch.randn(1, 512, 32, generator=g), encoder_attention_mask=mask,
        pooled_projections=torch.randn(1, 32, generator=g),
        image_embeds=torch.randn(1, 16, 32, generator=g) if image_embeds is None else image_embeds,
        indices_latents=torch.arange(3, 12), guidance=torch.tensor([10000.0]),
        latents_clean=torch.randn(1, 16, 2, h, w, generator=g), indices_latents_clean=torch.tensor([0, 12]),
        latents_history_2x=torch.randn(1, 16, 2, h, w, generator=g), indices_latents_history_2x=torch.tensor([13, 14]),
        latents_history_4x=torch.randn(1, 16, 16, h, w, generator=g), indices_latents_history_4x=torch.arange(15, 31))


def test_tiny_transformer_answers_the_engine_call_with_real_values(tiny_models):
    transformer = tiny_models.transformer
    for layer in (transformer.proj_out, transformer.norm_out.linear):
        assert layer.weight.abs().mean() > 0.01
    with torch.no_grad():
        out = transformer(**transformer_inputs())[0]
        other_image = transformer(**transformer_inputs(image_embeds=torch.ones(1, 16, 32)))[0]
    assert out.shape == (1, 16, 9, 8, 12) and torch.isfinite(out).all() and out.std() > 0.1
    assert (out - other_image).abs().mean() > 1e-3  # the conditioning reaches the output


def test_two_builds_from_scratch_are_bit_identical_and_leave_the_global_generator_alone(tmp_path):
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    first, second = tiny.ensure_tiny_models(tmp_path / "a"), tiny.ensure_tiny_models(tmp_path / "b")
    assert torch.equal(torch.rand(4), expected)  # building reseeded nothing that the caller sees
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert len(weights) == 5
    for name in weights:
        a, b = load_file(first / name), load_file(second / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in files:  # configs and tokenizer files too
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert sum((first / f).stat().st_size for f in files) < 5_000_000


def test_a_built_set_is_reused(tmp_path, monkeypatch):
    built = tiny.ensure_tiny_models(tmp_path)
    stamp = (built / "COMPLETE").stat().st_mtime_ns

    def no_rebuild(target):
        raise AssertionError("rebuilt a complete set")
    monkeypatch.setattr(tiny, "_build", no_rebuild)
    assert tiny.ensure_tiny_models(tmp_path) == built
    assert (built / "COMPLETE").stat().st_mtime_ns == stamp


def test_a_failed_build_leaves_nothing_half_built(tmp_path, monkeypatch):
    def crash(target):
        (target / "hunyuanvideo-community").mkdir()
        raise RuntimeError("power cut")
    monkeypatch.setattr(tiny, "_build", crash)
    with pytest.raises(RuntimeError):
        tiny.ensure_tiny_models(tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert (tiny.ensure_tiny_models(tmp_path) / "COMPLETE").is_file()


def assert_helpful(message: str, *also: str):
    for needle in (HUNYUAN, REDUX, "lllyasviel/FramePackI2V_HY", "about 43 GB", "--models-dir",
                   "FRAMEPACK_MODELS_DIR", "--model tiny", *also):
        assert needle in message, needle
    assert "Traceback" not in message


def test_offline_without_weights_says_what_to_download(empty_hub):
    with pytest.raises(ModelsUnavailableError) as caught:
        load_models("framepack")
    assert_helpful(str(caught.value), str(empty_hub), "HF_HOME")


def test_a_models_dir_missing_a_folder_says_what_is_missing(tmp_path, monkeypatch, no_network):
    for src in MODEL_SPECS["framepack-f1"].sources.values():
        if src.subfolder != "image_encoder":
            (tmp_path / src.repo_id / (src.subfolder or "")).mkdir(parents=True, exist_ok=True)
    with pytest.raises(ModelsUnavailableError) as caught:
        load_models("framepack-f1", models_dir=tmp_path)
    message = str(caught.value)
    assert f"missing under {tmp_path}: {Path(REDUX, 'image_encoder')}." in message
    assert "FramePack_F1_I2V_HY_20250503" in message
    for needle in (HUNYUAN, REDUX, "about 43 GB", "--models-dir", "--model tiny"):
        assert needle in message, needle

    monkeypatch.setenv("FRAMEPACK_MODELS_DIR", str(tmp_path))  # the same, through the environment
    with pytest.raises(ModelsUnavailableError, match="image_encoder"):
        load_models("framepack-f1")
    with pytest.raises(ModelsUnavailableError, match="does not exist"):
        load_models("framepack-f1", models_dir=tmp_path / "typo")


def test_a_models_dir_is_loaded_with_the_sets_dtypes(tiny_dir, no_network, tiny_files_as_real_set):
    messages = []
    models = load_models("framepack", models_dir=tiny_dir, progress=messages.append)
    assert models.spec is MODEL_SPECS["framepack"]
    assert models.transformer.dtype == torch.bfloat16 and models.text_encoder.dtype == torch.float16
    assert models.vae.dtype == models.image_encoder.dtype == models.text_encoder_2.dtype == torch.float16
    assert "loading text encoder (Llama)…" in messages and len(messages) == len(KEYS)


def test_the_hub_cache_is_used_offline(tiny_dir, empty_hub, tiny_files_as_real_set):
    # Lay the tiny weights out as huggingface_hub's cache holds a downloaded snapshot.
    for repo_id in {src.repo_id for src in MODEL_SPECS["framepack"].sources.values()}:
        repo = empty_hub / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0" * 40)
        shutil.copytree(tiny_dir / repo_id, repo / "snapshots" / ("0" * 40))
    models = load_models("framepack")
    assert isinstance(models.transformer, HunyuanVideoFramepackTransformer3DModel)
    assert Path(models.transformer.config._name_or_path).parts[-3:-1] == (
        "models--lllyasviel--FramePackI2V_HY", "snapshots")


def test_unknown_set_is_a_value_error():
    with pytest.raises(ValueError, match="framepack-f1"):
        load_models("framepack-2")


def test_a_byte_level_llama_tokenizer_keeps_its_spaces(tmp_path):
    # The real HunyuanVideo tokenizer is Llama 3's byte-level BPE declared as "LlamaTokenizerFast";
    # transformers 5's LlamaTokenizer would re-tokenize it SentencePiece-style and lose the spaces.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from framepack_core.models.loading import _load_component

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    folder = tmp_path / HUNYUAN / "tokenizer"
    folder.mkdir(parents=True)
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizerFast"}')
    tokenizer = _load_component("tokenizer", MODEL_SPECS["framepack"], tmp_path / HUNYUAN, lambda message: None)
    assert tokenizer.decode(tokenizer("a red fox").input_ids) == "a red fox"
    assert tokenizer.padding_side == "right"
