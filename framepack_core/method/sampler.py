"""Flow-matching UniPC (bh1/bh2) with the flux time shift, in the style of k-diffusion.

`sample_unipc(denoise, x, sigmas, ...)` takes a denoiser `D(x, sigma) -> x0` and returns the
last x0 prediction. The arithmetic follows METHOD.md exactly, including doing the
coefficient algebra on float32 tensors as the published sampler does, so that results
match it bit for bit.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def flux_mu(noisy_tokens: int, shift: float | None = None) -> float:
    """Shift parameter: linear in the token count between (256, 0.5) and (4096, 1.15), capped at ln 7."""
    if shift is not None:
        return math.log(shift)
    slope = (1.15 - 0.5) / (4096 - 256)
    intercept = 0.5 - slope * 256
    return min(slope * noisy_tokens + intercept, math.log(7.0))


def flux_sigmas(steps: int, mu: float) -> torch.Tensor:
    """`steps + 1` float32 sigmas from 1 down to exactly 0 (1/0 - 1 = inf gives sigma 0)."""
    t = torch.linspace(1, 0, steps=steps + 1)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def _broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def _unipc_update(denoise: Denoiser, x, m: list, s: list, t, order: int, variant: str):
    """One predictor-corrector step from s[-1] to t using the last `order` x0 predictions."""
    lam_prev = -torch.log(s[-1])
    h = -torch.log(t) - lam_prev
    rks, d1s = [], []
    for j in range(1, order):
        rk = ((-torch.log(s[-1 - j]) - lam_prev) / h)[0]
        rks.append(rk)
        d1s.append((m[-1 - j] - m[-1]) / rk)
    rks = torch.stack(rks + [torch.ones((), device=h.device)])

    hh = -h[0]
    phi1 = torch.expm1(hh)
    B = hh if variant == "bh1" else torch.expm1(hh)
    g = phi1 / hh - 1
    factorial = 1
    R, b = [], []
    for q in range(1, order + 1):
        R.append(torch.pow(rks, q - 1))
        b.append(g * factorial / B)
        factorial *= q + 1
        g = g / hh - 1 / factorial
    R, b = torch.stack(R), torch.stack(b)

    base = _broadcast(t / s[-1], x) * x - _broadcast(phi1, x) * m[-1]
    x_pred = base
    if order >= 2:
        d1s = torch.stack(d1s, dim=1)
        rho_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        x_pred = base - _broadcast(B, x) * torch.tensordot(d1s, rho_p, dims=([1], [0]))
    m_t = denoise(x_pred, t)
    rho_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(R, b)
    correction = rho_c[-1] * (m_t - m[-1])
    if order >= 2:
        correction = torch.tensordot(d1s, rho_c[:-1], dims=([1], [0])) + correction
    return base - _broadcast(B, x) * correction, m_t


def sample_unipc(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    variant: str = "bh1",
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """N = len(sigmas) - 1 denoiser calls; the final sigma (0) is never evaluated.

    `callback(i, N, x, x0)` runs after every step; raising from it stops sampling.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unknown UniPC variant {variant!r}; use 'bh1' or 'bh2'")
    steps = len(sigmas) - 1
    order = min(3, steps - 1)
    m: list[torch.Tensor] = []
    s: list[torch.Tensor] = []
    for i in range(steps):
        t = sigmas[i].expand(x.shape[0])
        if i == 0:
            m, s = [denoise(x, t)], [t]
        else:
            x, m_t = _unipc_update(denoise, x, m, s, t, min(i, order), variant)
            m.append(m_t)
            s.append(t)
        # Keep at most `order` entries; with a single step (order 0) keep the one there is.
        m, s = m[-max(order, 1):], s[-max(order, 1):]
        if callback is not None:
            callback(i, steps, x, m[-1])
    return m[-1]
