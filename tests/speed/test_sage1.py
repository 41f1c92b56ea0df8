"""SageAttention 1.x (the package index's 1.0.6) through our processor, on the CPU with a stand-in
package: which version takes which path, what the processor hands it, and the fallbacks."""
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from framepack_core.speed import attention, sage1
from framepack_core.speed.attention import apply_attention, choose
from tests.support.sampling import STEPS, sample

CPU = torch.device("cpu")


@pytest.fixture
def fake_sage(monkeypatch):
    """An installed `sageattention` 1.0.6 whose sageattn is SDPA, keeping what each call was given."""
    calls = []

    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, smooth_k=True):
        calls.append(dict(shape=tuple(q.shape), layout=tensor_layout, causal=is_causal, smooth_k=smooth_k, key=k))
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if smooth_k:
            k -= k.mean(dim=2, keepdim=True)  # as 1.0.6 does: in place
        out = F.scaled_dot_product_attention(q, k, v, scale=sm_scale)
        return out.transpose(1, 2) if tensor_layout == "NHD" else out

    module = types.ModuleType("sageattention")
    module.sageattn = sageattn
    monkeypatch.setitem(sys.modules, "sageattention", module)
    monkeypatch.setattr(sage1, "installed_version", lambda: (1, 0, 6))
    monkeypatch.setattr(attention, "_probed", {})  # probes are cached per process
    return calls


def test_versions_pick_the_path():
    assert sage1.is_version_1((1, 0, 6)) and not sage1.is_version_1((2, 1, 1)) and not sage1.is_version_1(None)
    assert sage1.installed_version() is None  # not installed in the test environment


def test_sage1_on_the_cpu_says_why_and_sdpa_runs(fake_sage):
    choice = choose("sage", CPU, torch.bfloat16, 24, 128)
    assert choice.backend == "sdpa" and choice.passed_over == {"sage": "needs a CUDA GPU, not cpu"}
    assert choice.notice() == "SageAttention cannot be used here (needs a CUDA GPU, not cpu); using PyTorch SDPA instead."


def test_without_the_package_sage_is_not_installed(monkeypatch):
    monkeypatch.setattr(sage1, "installed_version", lambda: None)
    monkeypatch.setattr(attention, "_probed", {})
    assert choose("sage", CPU, torch.bfloat16, 24, 128).passed_over == {"sage": "not installed"}


def test_the_dispatch_sends_only_calls_sage1_can_take(fake_sage, monkeypatch):
    monkeypatch.setattr(sage1, "DEVICE_TYPES", ("cpu",))
    q, k, v = (torch.randn(1, 40, 2, 64, dtype=torch.bfloat16) for _ in range(3))  # (batch, tokens, heads, dim)
    key = k.clone()
    out = sage1.sage1_dispatch(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, backend=None)
    sage1.sage1_dispatch(q, k, v, attn_mask=torch.ones(1, 40, dtype=torch.bool))
    sage1.sage1_dispatch(q, k, v, is_causal=True)
    sage1.sage1_dispatch(q[..., :32], k[..., :32], v[..., :32])  # head size 32
    sage1.sage1_dispatch(q.float(), k.float(), v.float())
    assert [c["shape"] for c in fake_sage] == [(1, 40, 2, 64)]
    assert fake_sage[0]["layout"] == "NHD" and not fake_sage[0]["causal"] and fake_sage[0]["smooth_k"] is False
    assert torch.equal(k, key) and fake_sage[0]["key"] is not k  # the caller's key is never changed
    expected = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    assert ((out.float() - expected).norm() / expected.norm()).item() < 0.01  # keys' mean removed: same softmax
    monkeypatch.setattr(sage1, "DEVICE_TYPES", ("cuda",))  # the default: on the GPU only
    sage1.sage1_dispatch(q, k, v)
    assert len(fake_sage) == 1


def test_the_processor_is_diffusers_own_code_with_our_dispatch():
    import inspect

    parent = sage1.HunyuanVideoAttnProcessor2_0.__call__
    assert sage1.Sage1Processor.__call__.__code__ is parent.__code__
    assert sage1.Sage1Processor.__call__.__globals__["dispatch_attention_fn"] is sage1.sage1_dispatch
    assert parent.__globals__["dispatch_attention_fn"] is not sage1.sage1_dispatch  # diffusers' module untouched
    # diffusers hands a processor only the keyword arguments its __call__ names.
    assert inspect.signature(sage1.Sage1Processor()).parameters.keys() == inspect.signature(
        sage1.HunyuanVideoAttnProcessor2_0()).parameters.keys()
    with pytest.raises(ImportError, match="no longer calls"):
        sage1._calling(parent, "not_called_there", None)


def test_the_processor_runs_the_transformer_through_sage1_and_back(tiny_models, fake_sage, monkeypatch):
    transformer = tiny_models.transformer
    before = sample(transformer, None, sections=1)[0]
    # The tiny set's heads are 16 wide and float32: let the stand-in take them on the CPU.
    monkeypatch.setattr(sage1, "HEAD_DIMS", (16,))
    monkeypatch.setattr(sage1, "DTYPES", (torch.float32,))
    monkeypatch.setattr(sage1, "DEVICE_TYPES", ("cpu",))
    choice = apply_attention(transformer, "sage", CPU, probe_fn=lambda backend, *_: None)
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    try:
        assert choice.backend == "sage"
        assert all(type(b.attn.processor) is sage1.Sage1Processor for b in blocks)
        with_sage = sample(transformer, None, sections=1)[0]
        assert len(fake_sage) == len(blocks) * STEPS  # every block's attention at every step
        # The stand-in is SDPA on keys less their mean: the softmax cancels the shift, rounding is left (1.4e-6
        # here, 70x under the bound; docs/NUMERICS.md). Its tokens out of order, or its output 1% off, fail it.
        assert torch.allclose(with_sage, before, atol=1e-4)
    finally:
        apply_attention(transformer, "sdpa", CPU)
    assert all(type(b.attn.processor) is sage1.HunyuanVideoAttnProcessor2_0 for b in blocks)
    assert torch.equal(sample(transformer, None, sections=1)[0], before)


def test_dynamo_traces_sage1_and_fp8_arithmetic_whole(tiny_models, fake_sage, monkeypatch):
    """What --compile needs: each block traced as one graph (no break) with SageAttention 1's processor
    and FP8 matrix multiplies (the compiler's own backend is left out: dynamo's trace is the risk)."""
    import copy

    from framepack_core.speed.precision import set_fp8_matmul, store_fp8

    monkeypatch.setattr(sage1, "HEAD_DIMS", (16,))
    monkeypatch.setattr(sage1, "DTYPES", (torch.float32,))
    monkeypatch.setattr(sage1, "DEVICE_TYPES", ("cpu",))
    transformer = copy.deepcopy(tiny_models.transformer)
    apply_attention(transformer, "sage", CPU, probe_fn=lambda backend, *_: None)
    store_fp8(transformer)
    set_fp8_matmul(transformer, "row")
    block = transformer.single_transformer_blocks[0]
    torch.manual_seed(0)
    args = (torch.randn(1, 40, 32), torch.randn(1, 8, 32), torch.randn(1, 32))  # hidden, prompt, temb
    eager = block(*args)
    torch._dynamo.reset()
    compiled = torch.compile(block.forward, fullgraph=True, backend="eager")  # fullgraph: a break raises
    calls = len(fake_sage)
    assert all(torch.equal(a, b) for a, b in zip(compiled(*args), eager)) and len(fake_sage) == calls + 1
    torch._dynamo.reset()
