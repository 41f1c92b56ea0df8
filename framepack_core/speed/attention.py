"""Which attention kernel the transformer uses, through diffusers' attention dispatcher.

`auto` takes the first of SageAttention, FlashAttention, xformers that is installed and passes
a probe on the device, dtype and head size the transformer will run with; PyTorch's SDPA is the
fallback and needs no probe. The probe compares the kernel with SDPA on random inputs, because
"importable" is not "works here": FlashAttention refuses float32 and old GPUs, SageAttention
only knows some head sizes, and a kernel built for another CUDA fails at its first call.

SageAttention is called through diffusers from version 2.1.1 (built by the user), and below it
(1.0.6 from the package index) through our own processor (sage1.py).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

import torch

from framepack_core.options import ATTENTION_KERNELS as BACKENDS

from . import sage1

log = logging.getLogger(__name__)

PREFERENCE = ("sage", "flash", "xformers", "sdpa")  # fastest first on recent NVIDIA GPUs
LABELS = {"sage": "SageAttention", "flash": "FlashAttention", "xformers": "xformers", "sdpa": "PyTorch SDPA"}
_DIFFUSERS = {"sage": "sage", "flash": "flash", "xformers": "xformers", "sdpa": "native"}
# Relative L2 distance from SDPA a kernel may show on the probe. SageAttention quantises Q and K
# to int8 (and P·V to fp8 in 2.x): its published error is around 1e-2, more than a half-precision
# rounding. The others are exact up to the rounding of the dtype.
TOLERANCE = {"sage": 0.05, "flash": 0.02, "xformers": 0.02}

_probed: dict[tuple, str | None] = {}


@dataclass(frozen=True)
class AttentionChoice:
    requested: str
    backend: str  # what runs: sage | flash | xformers | sdpa
    passed_over: dict[str, str] = field(default_factory=dict)  # backend -> why it was not used

    def line(self) -> str:
        """One line for logs and the command line."""
        why = "; ".join(f"{b}: {reason}" for b, reason in self.passed_over.items())
        return f"attention: {self.backend}" + (f" (passed over {why})" if why else "")

    def notice(self) -> str | None:
        """Something to tell the user when the kernel they asked for is not the one that runs."""
        if self.requested in ("auto", self.backend):
            return None
        return (f"{LABELS[self.requested]} cannot be used here ({self.passed_over[self.requested]}); "
                f"using {LABELS[self.backend]} instead.")


def probe(backend: str, device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> str | None:
    """None when `backend` works for these inputs on `device`, else the reason in a few words. Cached."""
    key = (backend, str(device), dtype, heads, head_dim)
    if key not in _probed:
        _probed[key] = _probe(backend, torch.device(device), dtype, heads, head_dim)
    return _probed[key]


def _probe(backend: str, device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> str | None:
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
        dispatch_attention_fn,
    )

    if backend == "sdpa":
        return None
    if backend == "sage" and sage1.is_version_1(sage1.installed_version()):
        return _probe_sage1(device, dtype, heads, head_dim)
    name = AttentionBackendName(_DIFFUSERS[backend])
    try:
        _check_attention_backend_requirements(name)
    except RuntimeError:
        return "not installed"
    if device.type != "cuda":
        return f"needs a CUDA GPU, not {device.type}"
    return check_kernel(lambda q, k, v: dispatch_attention_fn(q, k, v, backend=name), device, dtype, heads,
                        head_dim, TOLERANCE[backend])


def _probe_sage1(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> str | None:
    version = ".".join(map(str, sage1.installed_version()))
    if device.type != "cuda":
        return f"needs a CUDA GPU, not {device.type}"
    try:
        importlib.import_module("sageattention")
    except Exception as error:  # 1.x imports Triton, which not every CUDA torch brings (Windows)
        return f"SageAttention {version} cannot be imported: {type(error).__name__}: {str(error)[:100]}"
    if head_dim not in sage1.HEAD_DIMS or dtype not in sage1.DTYPES:
        return f"SageAttention {version} takes head sizes 64, 96, 128 in half precision, not {head_dim} in {dtype}"

    return check_kernel(lambda q, k, v: sage1.sage1_attention(q, k, v, None), device, dtype, heads, head_dim,
                        TOLERANCE["sage"])


def check_kernel(kernel, device: torch.device, dtype: torch.dtype, heads: int, head_dim: int,
                 tolerance: float) -> str | None:
    """Run `kernel(q, k, v)` ((batch, tokens, heads, head_dim) layout) on random inputs; None when its
    result is within `tolerance` (relative L2) of float32 SDPA, else what went wrong."""
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, 256, heads, head_dim, generator=g, device=device).to(dtype) for _ in range(3))
    try:
        out = kernel(q, k, v).float()
    except Exception as error:  # any failure of a kernel at its first call means: not here
        first_line = (str(error).splitlines() or [""])[0][:120]
        return f"failed on this device: {type(error).__name__}: {first_line}"
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    error = ((out - expected).norm() / expected.norm()).item()
    if not error <= tolerance:  # also catches NaN
        return f"results off by {error:.3g} (tolerance {tolerance:g})"
    return None


def choose(requested: str, device: torch.device, dtype: torch.dtype, heads: int, head_dim: int,
           probe_fn=probe) -> AttentionChoice:
    if requested not in BACKENDS:
        raise ValueError(f"unknown attention backend {requested!r}; use one of {', '.join(BACKENDS)}")
    candidates = PREFERENCE if requested == "auto" else (requested, "sdpa")
    passed_over = {}
    for backend in candidates:
        reason = probe_fn(backend, device, dtype, heads, head_dim)
        if reason is None:
            return AttentionChoice(requested, backend, passed_over)
        passed_over[backend] = reason
    raise AssertionError("PyTorch SDPA always works")  # pragma: no cover


def apply_attention(transformer, requested: str, device: torch.device, probe_fn=probe) -> AttentionChoice:
    """Set the chosen kernel on every attention processor of `transformer` (which will run on `device`).

    Per model, no global state: diffusers' `set_attention_backend` writes each processor's
    `_attention_backend` (what its dispatch call reads) and then also makes the kernel the
    process-wide default, which would reach every other model's attention (the VAE's, another
    run's transformer). Only the first half is done here, so two models can use two kernels.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName

    config = transformer.config
    choice = choose(requested, device, transformer.dtype, config.num_attention_heads, config.attention_head_dim,
                    probe_fn)
    use_sage1 = choice.backend == "sage" and sage1.is_version_1(sage1.installed_version())
    backend = AttentionBackendName("native" if use_sage1 else _DIFFUSERS[choice.backend])
    for module in _attention_modules(transformer):
        processor = module.processor
        if use_sage1 and type(processor) is sage1.HunyuanVideoAttnProcessor2_0:
            processor = module.processor = sage1.Sage1Processor()
        elif not use_sage1 and isinstance(processor, sage1.Sage1Processor):
            processor = module.processor = sage1.HunyuanVideoAttnProcessor2_0()
        processor._attention_backend = backend
    log.info(choice.line())
    return choice


def _attention_modules(model) -> list:
    return [m for m in model.modules()
            if getattr(m, "processor", None) is not None and hasattr(m.processor, "_attention_backend")]
