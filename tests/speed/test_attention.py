"""Choosing the attention kernel: preference order, probing, fallback to SDPA, results unchanged."""
import copy

import pytest
import torch
import torch.nn.functional as F

from framepack_core.request import Request
from framepack_core.speed.attention import PREFERENCE, TOLERANCE, apply_attention, check_kernel, choose, probe
from tests.support.sampling import sample

CPU = torch.device("cpu")


def fake_probe(working):
    return lambda backend, *_: None if backend in working else f"{backend} broken"


def test_auto_takes_the_first_working_kernel_in_preference_order():
    assert PREFERENCE == ("sage", "flash", "xformers", "sdpa")
    assert choose("auto", CPU, torch.bfloat16, 24, 128, fake_probe({"sage", "flash", "sdpa"})).backend == "sage"
    choice = choose("auto", CPU, torch.bfloat16, 24, 128, fake_probe({"xformers", "flash", "sdpa"}))
    assert choice.backend == "flash" and choice.passed_over == {"sage": "sage broken"} and choice.notice() is None
    choice = choose("auto", CPU, torch.bfloat16, 24, 128, fake_probe({"sdpa"}))
    assert choice.backend == "sdpa" and list(choice.passed_over) == ["sage", "flash", "xformers"]


def test_an_explicit_kernel_that_fails_falls_back_to_sdpa_with_a_notice():
    choice = choose("xformers", CPU, torch.bfloat16, 24, 128, fake_probe({"sage", "sdpa"}))
    assert choice.backend == "sdpa"  # not sage: only the asked-for kernel or the fallback
    assert choice.notice() == "xformers cannot be used here (xformers broken); using PyTorch SDPA instead."
    assert choose("flash", CPU, torch.bfloat16, 24, 128, fake_probe({"flash", "sdpa"})).backend == "flash"
    with pytest.raises(ValueError, match="unknown attention backend"):
        choose("fastest", CPU, torch.bfloat16, 24, 128)


def test_on_this_cpu_only_sdpa_works():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have other kernels")
    choice = choose("auto", CPU, torch.float32, 2, 16)
    assert choice.backend == "sdpa" and set(choice.passed_over) == {"sage", "flash", "xformers"}
    assert all(r == "not installed" or r.startswith("needs a CUDA GPU") for r in choice.passed_over.values())
    assert choice.line().startswith("attention: sdpa (passed over sage: ")


def test_the_probe_rejects_wrong_and_failing_kernels():
    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    assert check_kernel(sdpa, CPU, torch.float32, 2, 16, 1e-6) is None
    assert check_kernel(sdpa, CPU, torch.bfloat16, 2, 16, 0.02) is None  # half-precision rounding is allowed
    assert check_kernel(lambda q, k, v: sdpa(q, k, v) * 1.1, CPU, torch.float32, 2, 16, 0.02).startswith(
        "results off by 0.1")
    assert "off by nan" in check_kernel(lambda q, k, v: sdpa(q, k, v) * float("nan"), CPU, torch.float32, 2, 16, 0.02)

    def broken(q, k, v):
        raise RuntimeError("no kernel image is available for execution on the device\nmore")

    assert check_kernel(broken, CPU, torch.float16, 2, 16, 0.02) == (
        "failed on this device: RuntimeError: no kernel image is available for execution on the device")


def test_applying_sdpa_changes_no_result_and_only_the_transformer(tiny_models):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    transformer = tiny_models.transformer
    before = sample(transformer, None, sections=1)[0]
    active = _AttentionBackendRegistry._active_backend
    choice = apply_attention(transformer, "flash", CPU)
    assert choice.backend == "sdpa" and "FlashAttention" in choice.notice()
    # Every block's attention goes through the dispatcher (the prompt refiner's small one does not).
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    assert all(b.attn.processor._attention_backend.value == "native" for b in blocks)
    assert _AttentionBackendRegistry._active_backend == active
    # Only this model: another one keeps following the process-wide default.
    other = copy.deepcopy(transformer)
    for block in [*other.transformer_blocks, *other.single_transformer_blocks]:
        block.attn.processor._attention_backend = None
    apply_attention(transformer, "sdpa", CPU)
    assert all(b.attn.processor._attention_backend is None
               for b in [*other.transformer_blocks, *other.single_transformer_blocks])
    assert torch.equal(sample(transformer, None, sections=1)[0], before)


def test_request_refuses_unknown_kernels(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    with pytest.raises(ValueError, match="Attention must be one of auto, sage, flash, xformers, sdpa"):
        Request.from_fields(image=tmp_path / "p.png", prompt="x", attention="triton").validated()
    with pytest.raises(ValueError, match="Step cache threshold"):
        Request.from_fields(image=tmp_path / "p.png", prompt="x", cache_threshold=0).validated()
    with pytest.raises(ValueError, match="Step cache must be one of"):
        Request.from_fields(image=tmp_path / "p.png", prompt="x", cache_method="mag").validated()
    with pytest.raises(ValueError, match="FP8 must be one of off, storage, fast, not 'yes'"):
        Request.from_fields(image=tmp_path / "p.png", prompt="x", fp8="yes").validated()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_cuda_takes_the_first_kernel_that_passes_its_probe():
    cuda = torch.device("cuda")
    choice = choose("auto", cuda, torch.bfloat16, 24, 128)
    # Every faster kernel was passed over for a reason, and the chosen one really is within tolerance of SDPA.
    assert list(choice.passed_over) == list(PREFERENCE[:PREFERENCE.index(choice.backend)])
    assert probe(choice.backend, cuda, torch.bfloat16, 24, 128) is None
    if choice.backend != "sdpa":
        from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

        name = AttentionBackendName({"sage": "sage", "flash": "flash", "xformers": "xformers"}[choice.backend])
        assert check_kernel(lambda q, k, v: dispatch_attention_fn(q, k, v, backend=name), cuda, torch.bfloat16,
                            24, 128, TOLERANCE[choice.backend]) is None
