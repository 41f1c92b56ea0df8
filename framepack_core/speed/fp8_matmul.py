"""FP8 matrix multiplies (`--fp8 fast`): a Linear's FP8 weight times its input quantised to FP8.

The weight is the one FP8 storage keeps (precision.py: the bf16 weight cast to e4m3fn, no
scale), so `fast` streams and caches exactly the bytes `storage` does and a model set loaded once
serves both. Each call quantises the input per row (one scale per token: a token with large
activations does not flatten the others into FP8's few bits) and multiplies with
`torch._scaled_mm`, whose tensor cores take FP8 on compute capability 8.9 and newer (RTX 40/50,
L4/L40, H100/H200) at twice the bf16 rate. Where the row-wise kernel is missing it falls back
to one scale for the whole input.

Why not torchao's float8 inference config: it swaps each weight for a tensor subclass with its
own scales, which the memory manager cannot pack into a block's buffer or stream through a slot,
and which the FP8 weight cache (a plain safetensors file) cannot hold; bench/gpu/kernels.py measures
it resident beside this one where torchao is installed.

`_scaled_mm`'s rules (CUDA; the CPU kernel accepts more, so `check_operands` states them for the
tests): the input (M, K) row-major, the weight (K, N) column-major (the stored (N, K) weight
transposed, no copy), K and N multiples of 16, float32 scales: scalars (tensor-wise) or (M, 1) and
(1, N) (row-wise); the result is input @ weight * scale_a * scale_b.
"""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448; e4m3fn has no infinity (past 448 a cast saturates or gives NaN)
GRANULARITIES = ("row", "tensor")  # preferred first
MIN_ROWS = 16  # fewer rows (the blocks' modulation layers: one per batch) gain nothing; they upcast
_TINY = 1e-12  # the smallest amax a scale is made from: an all-zero row must not divide by zero

_ones: dict[tuple, torch.Tensor] = {}


def quantize_rows(x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) in bf16/fp16/fp32 as (FP8 values, float32 scale), x ~ values * scale.

    The scale maps each row's (or the whole input's) largest magnitude to 448. The multiply is done
    in x's own dtype (a float32 copy of a 12288-wide activation would be the largest temporary of
    the block), by the reciprocal rounded to that dtype; the scale returned is that rounded
    reciprocal's inverse, so dequantising undoes exactly the factor that was applied.
    """
    dims = dict(dim=-1, keepdim=True) if granularity == "row" else {}
    amax = torch.linalg.vector_norm(x, float("inf"), **dims).float()  # exact in any dtype; no |x| temporary
    factor = (FP8_MAX / amax.clamp(min=_TINY)).to(x.dtype)
    values = (x * factor).clamp_(-FP8_MAX, FP8_MAX).to(FP8)  # x * factor may round past 448: never NaN
    return values, factor.float().reciprocal()


def weight_scale(out_features: int, device: torch.device, granularity: str) -> torch.Tensor:
    """The stored FP8 weight's scale: 1 (storage casts without one), in the shape the kernel wants."""
    key = (out_features, str(device), granularity)
    if key not in _ones:
        shape = (1, out_features) if granularity == "row" else ()
        _ones[key] = torch.ones(shape, dtype=torch.float32, device=device)
    return _ones[key]


def eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `_scaled_mm` can take this call: an FP8 contiguous weight with K and N multiples of 16."""
    n, k = weight.shape
    rows = x.numel() // max(x.shape[-1], 1)
    return (weight.dtype == FP8 and weight.is_contiguous() and k % 16 == 0 and n % 16 == 0
            and rows >= MIN_ROWS)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, granularity: str) -> torch.Tensor:
    """F.linear(x, weight, bias) with x quantised to FP8 and an FP8 weight, in x's dtype."""
    a, scale_a = quantize_rows(x.reshape(-1, x.shape[-1]), granularity)
    out = torch._scaled_mm(a, weight.t(), scale_a, weight_scale(weight.shape[0], x.device, granularity),
                           out_dtype=x.dtype)
    if bias is not None:
        out = out + bias.to(x.dtype)  # beside the kernel: not every scaling mode takes a bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def check_operands(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor) -> None:
    """Raise AssertionError unless CUDA's `_scaled_mm` would take these operands (see the module's doc)."""
    (m, k), (k2, n) = a.shape, b.shape
    assert a.dtype == b.dtype == FP8 and k == k2, (a.dtype, b.dtype, a.shape, b.shape)
    assert a.stride(1) == 1 and a.stride(0) >= k, f"input must be row-major, strides {a.stride()}"
    assert b.stride(0) == 1 and b.stride(1) >= k, f"weight must be column-major, strides {b.stride()}"
    assert k % 16 == 0 and n % 16 == 0, f"K={k} and N={n} must be multiples of 16"
    assert scale_a.dtype == scale_b.dtype == torch.float32
    row = tuple(scale_a.shape) == (m, 1) and tuple(scale_b.shape) == (1, n)
    assert row or scale_a.numel() == scale_b.numel() == 1, (scale_a.shape, scale_b.shape)
    assert scale_a.is_contiguous() and scale_b.is_contiguous()


def unsupported(device: torch.device) -> str | None:
    """None where FP8 arithmetic can run on `device`, else why not, in a few words."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"it needs an NVIDIA GPU, and this run is on the {device.type.upper()}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return (f"it needs an NVIDIA GPU of compute capability 8.9 or newer (RTX 40/50, H100), and "
                f"{torch.cuda.get_device_name(device)} is {major}.{minor}")
    return None


_probed: dict[str, str | tuple] = {}


def choose_granularity(device: torch.device, fp8_linear_fn=None) -> tuple[str | None, str | None]:
    """(granularity, None) for the first of GRANULARITIES that runs on `device` and gives F.linear's
    result within FP8's rounding, else (None, why not). Cached per device."""
    key = str(device)
    if key not in _probed:
        reason = unsupported(device)
        _probed[key] = (None, reason) if reason else _probe(torch.device(device), fp8_linear_fn or fp8_linear)
    return _probed[key]


def _probe(device: torch.device, fn) -> tuple[str | None, str | None]:
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(77, 256, generator=g, device=device).to(torch.bfloat16)  # rows as a run has them: any count
    weight = (torch.randn(128, 256, generator=g, device=device) * 0.05).to(FP8)
    expected = torch.nn.functional.linear(x.float(), weight.float())
    failures = []
    for granularity in GRANULARITIES:
        try:
            out = fn(x, weight, None, granularity).float()
        except Exception as error:  # a kernel missing on this device fails at its first call
            failures.append(f"{granularity}-wise: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]}")
            continue
        error = ((out - expected).norm() / expected.norm()).item()
        if error <= 0.1:  # FP8 rounding of the input: a few percent
            return granularity, None
        failures.append(f"{granularity}-wise results off by {error:.3g}")
    return None, "FP8 matrix multiplies failed on this GPU (" + "; ".join(failures) + ")"
