"""FP8 matrix multiplies (`--fp8 fast`) on the CPU: the scaling arithmetic against a float reference,
the operands CUDA's `_scaled_mm` requires, the choice of granularity, the layer hook with LoRA and
streaming, and the refusal where FP8 arithmetic cannot run."""
import copy

import pytest
import torch
import torch.nn.functional as F

from framepack_core.models.lora import LoraHook
from framepack_core.speed import fp8_matmul
from framepack_core.speed.fp8_matmul import (FP8, FP8_MAX, check_operands, eligible, fp8_linear, quantize_rows,
                                             unsupported)
from framepack_core.speed.precision import fp8_layers, set_fp8_matmul, store_fp8
from framepack_core.speed.prepare import apply_fp8
from tests.support.sampling import sample

CPU = torch.device("cpu")


def activations(rows=48, width=64, seed=0):
    """bf16 rows of very different sizes: one all zero, one with an outlier, one tiny."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g)
    x[0] = 0
    x[1, 3] = 900.0  # past FP8's largest value: only a scale brings it in
    x[2] *= 1e-4
    return x.to(torch.bfloat16)


def e4m3_step(v: torch.Tensor) -> torch.Tensor:
    """Half the spacing of e4m3fn values around |v| (3 mantissa bits; subnormals below 2**-6)."""
    exponent = torch.floor(torch.log2(v.abs().clamp(min=2.0 ** -6)))
    return 2.0 ** (exponent - 3) / 2


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_quantized_rows_dequantize_to_the_input_within_fp8_rounding(granularity):
    x = activations()
    values, scale = quantize_rows(x, granularity)
    assert values.dtype == FP8 and scale.dtype == torch.float32
    assert scale.shape == ((48, 1) if granularity == "row" else ())
    v = values.float()
    assert torch.isfinite(v).all() and v.abs().max() <= FP8_MAX
    peaks = v.abs().amax(dim=-1)
    if granularity == "row":  # each row's largest magnitude lands at (or one rounding below) 448
        assert (peaks[1:] >= 416).all() and peaks[0] == 0 and scale[0].item() > 0
    else:
        assert peaks.max() >= 416
    # Dequantising: values * scale is x up to half an FP8 step of the scaled value (and bf16's
    # rounding of x * factor before it, 2**-9 relative).
    exact = x.float()
    bound = (e4m3_step(exact / scale) + (exact / scale).abs() * 2.0 ** -8) * scale
    assert ((v * scale - exact).abs() <= bound).all()
    # The scale is the exact inverse of the factor applied (rounded to bf16), not of 448 / amax.
    factor = (FP8_MAX / exact.abs().amax(**({"dim": -1, "keepdim": True} if granularity == "row" else {}))
              .clamp(min=1e-12)).to(torch.bfloat16)
    assert torch.equal(scale, factor.float().reciprocal())


def test_the_emulated_cast_matches_the_float_reference_on_exact_fp8_values():
    # Values that e4m3fn holds exactly come back bit for bit; halfway values round to even.
    exact = torch.tensor([[448.0, -448.0, 1.0, 0.015625, 2.0 ** -9, 0.0] + [1.0] * 10])
    assert torch.equal(exact.to(FP8).float(), exact)
    assert torch.tensor([1.0625, 1.1875]).to(FP8).float().tolist() == [1.0, 1.25]  # ties to even mantissa


@pytest.mark.parametrize("granularity", ["row", "tensor"])
def test_fp8_linear_is_the_float_product_of_its_fp8_operands(granularity, monkeypatch):
    seen = []
    real = torch._scaled_mm

    def checked(a, b, scale_a, scale_b, **kwargs):
        check_operands(a, b, scale_a, scale_b)  # what CUDA's kernel would refuse, refused here too
        seen.append((tuple(a.shape), tuple(b.shape), b.stride()))
        return real(a, b, scale_a, scale_b, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", checked)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 64, generator=g).to(torch.bfloat16)  # (batch, tokens, K): 48 rows
    weight = (torch.randn(32, 64, generator=g) * 0.05).to(FP8)  # (N, K) as FP8 storage keeps it
    bias = torch.randn(32, generator=g).to(torch.bfloat16)
    out = fp8_linear(x, weight, bias, granularity)
    assert out.shape == (2, 24, 32) and out.dtype == torch.bfloat16
    assert seen == [((48, 64), (64, 32), (1, 64))]  # the stored weight transposed: column-major, no copy
    values, scale = quantize_rows(x.reshape(48, 64), granularity)
    product = (values.double() * scale.double()) @ weight.double().t()
    reference = product + bias.double()
    # Two bf16 roundings, each within half a unit in the last place (2**-8 relative): the product's, the sum's.
    assert ((out.double().reshape(48, 32) - reference).abs() <= 2 ** -8 * (product.abs() + reference.abs())).all()
    # Against bf16 arithmetic on the unquantised input: FP8's few bits, a few percent.
    plain = F.linear(x.float(), weight.float(), bias.float())
    assert ((out.float() - plain).norm() / plain.norm()).item() < 0.05


def test_check_operands_states_the_cuda_kernels_rules():
    a = torch.zeros(48, 64).to(FP8)
    w = torch.zeros(32, 64).to(FP8)
    one = torch.ones(())
    check_operands(a, w.t(), one, one)
    check_operands(a, w.t(), torch.ones(48, 1), torch.ones(1, 32))
    with pytest.raises(AssertionError, match="column-major"):
        check_operands(a, w.t().contiguous(), one, one)
    with pytest.raises(AssertionError, match="row-major"):
        check_operands(a.t().contiguous().t(), w.t(), one, one)
    with pytest.raises(AssertionError, match="multiples of 16"):
        check_operands(torch.zeros(48, 40).to(FP8), torch.zeros(32, 40).to(FP8).t(), one, one)
    with pytest.raises(AssertionError):
        check_operands(a, w.t(), torch.ones(48, 1), one)  # row-wise needs both scales row-wise
    with pytest.raises(AssertionError):
        check_operands(a, w.t(), one.double(), one)


def test_only_calls_the_kernel_can_take_are_multiplied_in_fp8():
    x = torch.zeros(1, 16, 64, dtype=torch.bfloat16)
    w = torch.zeros(32, 64).to(FP8)
    assert eligible(x, w)
    assert not eligible(x[:, :1], w)  # one row (the modulation layers): the upcast is as fast
    assert not eligible(x, w.to(torch.bfloat16))
    assert not eligible(x[..., :40], torch.zeros(32, 40).to(FP8))  # K not a multiple of 16
    assert not eligible(x, torch.zeros(24, 64).to(FP8))  # N not a multiple of 16
    assert not eligible(x, torch.zeros(64, 64).to(FP8)[:, ::2].t()[:32])  # not contiguous


def test_fp8_arithmetic_is_refused_without_a_recent_nvidia_gpu(monkeypatch):
    assert unsupported(CPU) == "it needs an NVIDIA GPU, and this run is on the CPU"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3090")
    assert unsupported(torch.device("cuda")) == ("it needs an NVIDIA GPU of compute capability 8.9 or newer "
                                                  "(RTX 40/50, H100), and NVIDIA GeForce RTX 3090 is 8.6")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    assert unsupported(torch.device("cuda")) is None
    assert fp8_matmul.choose_granularity(CPU) == (None, "it needs an NVIDIA GPU, and this run is on the CPU")


def test_the_probe_takes_row_scales_and_falls_back_to_one_scale():
    def no_rowwise(x, weight, bias, granularity):
        if granularity == "row":
            raise RuntimeError("Only tensorwise scaling is supported on this device\nmore")
        return fp8_linear(x, weight, bias, granularity)

    assert fp8_matmul._probe(CPU, fp8_linear) == ("row", None)
    assert fp8_matmul._probe(CPU, no_rowwise) == ("tensor", None)
    granularity, reason = fp8_matmul._probe(CPU, lambda x, w, b, g: fp8_linear(x, w, b, g) * float("nan"))
    assert granularity is None and reason == ("FP8 matrix multiplies failed on this GPU (row-wise results off "
                                              "by nan; tensor-wise results off by nan)")


class _NoPlacement:
    def placement(self, model):
        return None


@pytest.fixture
def transformer(tiny_models):
    return copy.deepcopy(tiny_models.transformer)  # FP8 storage is for good


def test_modes_switch_on_one_loaded_model(transformer, monkeypatch):
    before = sample(transformer, None, sections=1)[0]
    notices = []
    assert apply_fp8(transformer, "fast", CPU, _NoPlacement(), notices) == "off"  # refused on the CPU
    assert notices == ["FP8 arithmetic (--fp8 fast) is not used: it needs an NVIDIA GPU, and this run is on the "
                       "CPU. The transformer runs without it (--fp8 storage keeps its weights in FP8 on any device)."]
    assert torch.equal(sample(transformer, None, sections=1)[0], before)  # nothing changed

    assert apply_fp8(transformer, "storage", CPU, _NoPlacement(), []) == "storage"
    storage = sample(transformer, None, sections=1)[0]
    calls = []
    monkeypatch.setattr(fp8_matmul, "choose_granularity", lambda device: ("row", None))  # as on an H100
    monkeypatch.setattr("framepack_core.speed.prepare.choose_granularity", lambda device: ("row", None))
    real = fp8_linear
    monkeypatch.setattr("framepack_core.speed.precision.fp8_linear",
                        lambda *args: calls.append(args[1].shape) or real(*args))
    assert apply_fp8(transformer, "fast", CPU, _NoPlacement(), []) == "fast"
    fast = sample(transformer, None, sections=1)[0]
    assert len(calls) > 0 and not torch.equal(fast, storage)  # the blocks' token-wise layers in FP8
    assert ((fast - storage).norm() / storage.norm()).item() < 0.1
    count = len(calls)
    notices = []
    assert apply_fp8(transformer, "off", CPU, _NoPlacement(), notices) == "storage"  # the weights stay FP8
    assert "keeps the FP8 weights" in notices[0]
    assert torch.equal(sample(transformer, None, sections=1)[0], storage) and len(calls) == count


def test_fast_layers_stream_and_take_lora_hooks(transformer):
    store_fp8(transformer)
    assert set_fp8_matmul(transformer, "row") == len(fp8_layers(transformer))
    resident = sample(transformer, None, sections=1)[0]
    from tests.speed.test_precision import placed_run, streaming_budget

    streamed, plan = placed_run(transformer, streaming_budget(transformer))
    assert plan.streams and torch.equal(streamed, resident)  # the hook reads the weight from its slot

    name, layer = next((n, m) for n, m in fp8_layers(transformer) if n.endswith("ff.net.2"))
    x = torch.randn(1, 20, layer.in_features)
    base = layer(x)
    down, up = torch.randn(2, layer.in_features), torch.randn(layer.out_features, 2)
    handle = layer.register_forward_hook(LoraHook(down, up))
    try:
        assert torch.allclose(layer(x), base + x @ down.t() @ up.t(), atol=1e-5)  # FP8 output plus the delta
    finally:
        handle.remove()
    set_fp8_matmul(transformer, None)


def test_fast_and_sage_on_the_cpu_say_why_and_the_record_says_what_ran(tiny_models, square_picture, tmp_path):
    import json

    from framepack_core.events import Finished, Notice
    from framepack_core.request import Request, remake_fields
    from tests.support.helpers import run_events, tiny_request

    events = run_events(tiny_request(square_picture, steps=1, attention="sage", fp8="fast"), tiny_models,
                        tmp_path / "v.mp4")
    finished = events[-1]
    assert isinstance(finished, Finished) and (finished.attention, finished.fp8) == ("sdpa", "off")
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(n.startswith("FP8 arithmetic (--fp8 fast) is not used: it needs an NVIDIA GPU") for n in notices)
    assert any(n.startswith("SageAttention cannot be used here") for n in notices)
    record = json.loads(finished.video.with_suffix(".json").read_text())
    assert (record["settings"]["fp8"], record["fp8_used"], record["attention_used"]) == ("fast", "off", "sdpa")
    remade = Request.from_fields(image=square_picture, **remake_fields(record)).validated()
    assert (remade.speed.fp8, remade.speed.attention_requested) == ("off", "sdpa")  # what ran, not what was asked
