"""Loading without materialising: the tiny set mapped from its files, FP8 cached on disk, prompts cached."""
import torch

import framepack_core.models.prompt_cache as prompt_cache
import framepack_core.models.weight_cache as weight_cache
from framepack_core.models import mapped_loading
from framepack_core.models.loading import load_models
from framepack_core.speed.precision import FP8, is_fp8, store_fp8_cached
from memory import is_mapped
from tests.support.prompt_memory import clear_prompt_memory

KEYS = ("transformer", "text_encoder", "text_encoder_2", "vae", "image_encoder")


def test_every_model_of_the_set_is_mapped_and_equal_to_the_libraries_loading(tiny_models, monkeypatch):
    for key in KEYS:
        model = getattr(tiny_models, key)
        assert model.mapped_files and all(is_mapped(p) for p in model.parameters()), key
    monkeypatch.setattr("framepack_core.models.loading.load_mapped", lambda *a, **k: None)
    usual = load_models("tiny")  # from_pretrained, weights read into memory
    for key in KEYS:
        ours, theirs = getattr(tiny_models, key), getattr(usual, key)
        a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
        assert a.keys() == b.keys() and not any(is_mapped(p) for p in b.values())
        assert all(a[n].dtype == b[n].dtype and torch.equal(a[n], b[n]) for n in a), key
        ba, bb = dict(ours.named_buffers()), dict(theirs.named_buffers())
        assert ba.keys() == bb.keys() and all(ba[n].dtype == bb[n].dtype and torch.equal(ba[n], bb[n]) for n in ba)


def test_files_that_do_not_name_the_models_tensors_fall_back(tmp_path):
    import diffusers

    from memory import write_safetensors

    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKLHunyuanVideo"}')
    write_safetensors(tmp_path / "x.safetensors", [("other", torch.float32, (2,))], lambda n: torch.zeros(2))
    assert mapped_loading.load_mapped(diffusers.AutoencoderKLHunyuanVideo, tmp_path, torch.float32,
                                      "diffusers") is None


@torch.no_grad()
def test_fp8_is_converted_once_then_mapped_from_the_cache(tiny_models, tmp_path):
    first = load_models("tiny").transformer
    before = weight_cache.conversions
    store_fp8_cached(first, cache_dir=tmp_path)
    assert weight_cache.conversions == before + 1 and is_fp8(first)
    written = list((tmp_path / "converted").rglob("*.safetensors"))
    assert len(written) == 1
    stamp = written[0].stat().st_mtime_ns
    second = load_models("tiny").transformer  # a later start
    store_fp8_cached(second, cache_dir=tmp_path)
    assert weight_cache.conversions == before + 1 and written[0].stat().st_mtime_ns == stamp  # nothing converted
    weights = [(n, p) for n, p in second.named_parameters() if p.dtype == FP8]
    assert weights and all(is_mapped(p) for _, p in weights)
    reference = dict(tiny_models.transformer.named_parameters())
    for name, p in weights:  # the FP8 rounding of the bf16/fp32 weights, exactly
        assert torch.equal(p.view(torch.uint8), reference[name].to(FP8).view(torch.uint8))
    firsts = dict(first.named_parameters())
    assert all(torch.equal(p.view(torch.uint8), firsts[n].view(torch.uint8)) for n, p in weights)


@torch.no_grad()
def test_a_prompt_seen_before_never_touches_the_text_encoders(tiny_models, tmp_path, monkeypatch):
    clear_prompt_memory()
    calls = []
    hook = tiny_models.text_encoder.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        first = prompt_cache.cached_prompt(tiny_models, "a cat turns its head", cache_dir=tmp_path)
        assert len(calls) == 1
        again = prompt_cache.cached_prompt(tiny_models, "a cat turns its head", cache_dir=tmp_path)
        assert again is first and len(calls) == 1  # from memory
        clear_prompt_memory()  # a new session: from disk
        disk = prompt_cache.cached_prompt(tiny_models, "a cat turns its head", cache_dir=tmp_path)
        assert len(calls) == 1
        for a, b in zip(disk.conditioning, first.conditioning):
            assert a.dtype == b.dtype and torch.equal(a, b)
        assert disk.truncated == first.truncated
        other = prompt_cache.cached_prompt(tiny_models, "a dog", cache_dir=tmp_path)
        assert len(calls) == 2 and not torch.equal(other.conditioning.embeds, first.conditioning.embeds)
        assert len(list((tmp_path / "prompts" / "tiny").glob("*.safetensors"))) == 2
    finally:
        hook.remove()
        clear_prompt_memory()
