"""Independent reference of FramePack's published section loop (test-only).

Restates, in its own code, the algorithm of the public FramePack demo
(lllyasviel/FramePack: ``demo_gradio.py`` for inverted anti-drifting sampling,
``demo_gradio_f1.py`` for forward sampling) and of its sampler
(``diffusers_helper/k_diffusion/uni_pc_fm.py``, ``k_diffusion/wrapper.py``,
``pipelines/k_diffusion_hunyuan.py``), with the deviations fixed by
``/work/shared/METHOD.md``:

* (as published) the x0 prediction is ``x.to(dtype).float() - sigma * v``: the x that the
  transformer saw, rounded to its dtype (bf16 for the real sets), while the sampler state
  stays float32;
* one CPU generator, each section draws ``randn((1, 16, K, h, w))`` float32 in
  section order and nothing else draws from it;
* an end latent replaces ``history[:, :, 0:1]`` (the 1x "post" clean latent) in the
  first inverted section.

It deliberately does not import anything from ``framepack_core``: it exists to check
that implementation tensor for tensor. The arithmetic mirrors the published code
operation for operation (float32 torch tensors for sigmas and UniPC coefficients,
``torch.linalg.solve``, ``torch.tensordot``), so a faithful implementation matches it
bit for bit on CPU.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "flux_mu",
    "flux_sigmas",
    "reference_sections",
    "reference_video_latents",
    "section_count",
    "inverted_paddings",
]


# --------------------------------------------------------------------------- schedule


def section_count(seconds: float, window: int) -> int:
    """Number of sections: ``max(round(seconds * 30 / (4 * window)), 1)``."""
    return int(max(round((seconds * 30) / (window * 4)), 1))


def inverted_paddings(n: int) -> list[int]:
    if n > 4:
        return [3] + [2] * (n - 3) + [1, 0]
    return list(reversed(range(n)))


def flux_mu(seq_len: int, x1=256, y1=0.5, x2=4096, y2=1.15, exp_max=7.0) -> float:
    # published calculate_flux_mu: slope/intercept form, capped at ln(exp_max)
    k = (y2 - y1) / (x2 - x1)
    b = y1 - k * x1
    mu = k * seq_len + b
    return min(mu, math.log(exp_max))


def _flux_time_shift(t, mu, sigma=1.0):
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def flux_sigmas(steps: int, mu: float) -> torch.Tensor:
    t = torch.linspace(1, 0, steps=steps + 1)
    return _flux_time_shift(t, mu=mu)


# --------------------------------------------------------------------------- denoiser


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def _make_denoiser(transformer, dtype, cfg, rs, positive: dict, negative: dict | None):
    """fm_wrapper: x0 prediction ``x.to(dtype).float() - sigma * v``, optional real CFG + rescale."""

    def denoise(x, sigma):
        sigma = sigma.float()
        hidden = x.to(dtype)
        timestep = (sigma * 1000.0).to(dtype)
        v_pos = transformer(hidden_states=hidden, timestep=timestep, return_dict=False, **positive)[0].float()
        if cfg == 1.0:
            v_neg = torch.zeros_like(v_pos)
        else:
            v_neg = transformer(hidden_states=hidden, timestep=timestep, return_dict=False, **negative)[0].float()
        v = v_neg + cfg * (v_pos - v_neg)
        if rs != 0:
            dims = list(range(1, v_pos.ndim))
            std_pos = v_pos.std(dim=dims, keepdim=True)
            std_cfg = v.std(dim=dims, keepdim=True)
            v_rescaled = v * (std_pos / std_cfg)
            v = rs * v_rescaled + (1.0 - rs) * v
        # METHOD.md "Denoiser": from the rounded x the transformer saw, as the published wrapper
        # (it rebinds x to x.to(dtype) before this line)
        x0 = hidden.float() - v.float() * _append_dims(sigma, x.ndim)
        return x0.to(torch.float32)

    return denoise


# --------------------------------------------------------------------------- UniPC (flow matching)


def _expand(v, dims):
    return v[(...,) + (None,) * (dims - 1)]


def _unipc_update(model, x, m_list, t_list, t, order, variant):
    dims = x.dim()
    t_prev_0 = t_list[-1]
    lam_prev_0 = -torch.log(t_prev_0)
    lam_t = -torch.log(t)
    m_prev_0 = m_list[-1]
    h = lam_t - lam_prev_0

    rks = []
    d1s = []
    for i in range(1, order):
        t_prev_i = t_list[-(i + 1)]
        m_prev_i = m_list[-(i + 1)]
        lam_prev_i = -torch.log(t_prev_i)
        rk = ((lam_prev_i - lam_prev_0) / h)[0]
        rks.append(rk)
        d1s.append((m_prev_i - m_prev_0) / rk)
    rks.append(1.0)
    rks = torch.tensor(rks, device=x.device)

    hh = -h[0]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    if variant == "bh1":
        b_h = hh
    elif variant == "bh2":
        b_h = torch.expm1(hh)
    else:
        raise ValueError(f"bad variant {variant!r}")

    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = torch.stack(rows)
    b = torch.tensor(b, device=x.device)

    use_predictor = len(d1s) > 0
    if use_predictor:
        d1s = torch.stack(d1s, dim=1)
        if order == 2:
            rhos_p = torch.tensor([0.5], device=b.device)
        else:
            rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1])
    else:
        d1s = None
        rhos_p = None

    if order == 1:
        rhos_c = torch.tensor([0.5], device=b.device)
    else:
        rhos_c = torch.linalg.solve(R, b)

    x_base = _expand(t / t_prev_0, dims) * x - _expand(h_phi_1, dims) * m_prev_0
    pred_res = torch.tensordot(d1s, rhos_p, dims=([1], [0])) if use_predictor else 0
    x_pred = x_base - _expand(b_h, dims) * pred_res
    m_t = model(x_pred, t)
    corr_res = torch.tensordot(d1s, rhos_c[:-1], dims=([1], [0])) if d1s is not None else 0
    d1_t = m_t - m_prev_0
    x_t = x_base - _expand(b_h, dims) * (corr_res + rhos_c[-1] * d1_t)
    return x_t, m_t


def _unipc_sample(model, x, sigmas, variant="bh1"):
    order = min(3, len(sigmas) - 2)
    m_list, t_list = [], []
    for i in range(len(sigmas) - 1):
        vec_t = sigmas[i].expand(x.shape[0])
        if i == 0:
            m_list = [model(x, vec_t)]
            t_list = [vec_t]
        else:
            k = i if i < order else order
            x, m_t = _unipc_update(model, x, m_list, t_list, vec_t, k, variant)
            m_list.append(m_t)
            t_list.append(vec_t)
        m_list = m_list[-order:]
        t_list = t_list[-order:]
    return m_list[-1]


# --------------------------------------------------------------------------- one section


def _sample_section(
    transformer,
    cond,
    noise,
    *,
    steps,
    gs,
    cfg,
    rs,
    variant,
    shift,
    latent_indices,
    clean_latents,
    clean_indices,
    latents_2x,
    indices_2x,
    latents_4x,
    indices_4x,
):
    dtype = transformer.dtype
    device = noise.device
    _, _, T, H, W = noise.shape
    seq_len = T * H * W // 4
    mu = flux_mu(seq_len) if shift is None else math.log(shift)
    sigmas = flux_sigmas(steps, mu).to(device)

    guidance = torch.tensor([gs * 1000.0]).to(device=device, dtype=dtype)
    common = dict(
        image_embeds=cond["image_embeds"].to(dtype),
        indices_latents=latent_indices,
        guidance=guidance,
        latents_clean=clean_latents.to(dtype),
        indices_latents_clean=clean_indices,
        latents_history_2x=latents_2x.to(dtype),
        indices_latents_history_2x=indices_2x,
        latents_history_4x=latents_4x.to(dtype),
        indices_latents_history_4x=indices_4x,
    )
    positive = dict(
        encoder_hidden_states=cond["prompt_embeds"].to(dtype),
        encoder_attention_mask=cond["prompt_mask"],
        pooled_projections=cond["pooled"].to(dtype),
        **common,
    )
    negative = None
    if cfg != 1.0:
        negative = dict(
            encoder_hidden_states=cond["negative_prompt_embeds"].to(dtype),
            encoder_attention_mask=cond["negative_prompt_mask"],
            pooled_projections=cond["negative_pooled"].to(dtype),
            **common,
        )
    model = _make_denoiser(transformer, dtype, cfg, rs, positive, negative)
    return _unipc_sample(model, noise.to(torch.float32), sigmas, variant=variant)


# --------------------------------------------------------------------------- section loops


@torch.no_grad()
def reference_sections(
    transformer,
    cond: dict,
    start_latent: torch.Tensor,
    *,
    seconds: float,
    window: int = 9,
    steps: int = 25,
    gs: float = 10.0,
    cfg: float = 1.0,
    rs: float = 0.0,
    mode: str = "inverted",
    variant: str = "bh1",
    generator: torch.Generator,
    end_latent: torch.Tensor | None = None,
    shift: float | None = None,
) -> list[torch.Tensor]:
    """Per section, in generation order, the latents exactly as added to the history."""
    K = window
    n = section_count(seconds, K)
    start = start_latent.to(torch.float32)
    _, C, _, h, w = start.shape
    kw = dict(steps=steps, gs=gs, cfg=cfg, rs=rs, variant=variant, shift=shift)
    out: list[torch.Tensor] = []

    if mode == "inverted":
        history = torch.zeros((1, 16, 1 + 2 + 16, h, w), dtype=torch.float32)
        for si, pad in enumerate(inverted_paddings(n)):
            last = pad == 0
            pad_size = pad * K
            idx = torch.arange(0, sum([1, pad_size, K, 1, 2, 16]))
            pre_i, _blank_i, lat_i, post_i, i2x, i4x = idx.split([1, pad_size, K, 1, 2, 16])
            clean_i = torch.cat([pre_i, post_i])
            post, l2x, l4x = history[:, :, : 1 + 2 + 16].split([1, 2, 16], dim=2)
            if si == 0 and end_latent is not None:
                post = end_latent.to(history)
            clean = torch.cat([start.to(history), post], dim=2)
            noise = torch.randn((1, 16, K, h, w), generator=generator, dtype=torch.float32)
            x = _sample_section(
                transformer, cond, noise, latent_indices=lat_i, clean_latents=clean, clean_indices=clean_i,
                latents_2x=l2x, indices_2x=i2x, latents_4x=l4x, indices_4x=i4x, **kw,
            )
            if last:
                x = torch.cat([start.to(x), x], dim=2)
            history = torch.cat([x.to(history), history], dim=2)
            out.append(x)
    elif mode == "forward":
        history = torch.zeros((1, 16, 16 + 2 + 1, h, w), dtype=torch.float32)
        history = torch.cat([history, start.to(history)], dim=2)
        for _ in range(n):
            idx = torch.arange(0, sum([1, 16, 2, 1, K]))
            start_i, i4x, i2x, i1x, lat_i = idx.split([1, 16, 2, 1, K])
            clean_i = torch.cat([start_i, i1x])
            l4x, l2x, l1x = history[:, :, -sum([16, 2, 1]):].split([16, 2, 1], dim=2)
            clean = torch.cat([start.to(history), l1x], dim=2)
            noise = torch.randn((1, 16, K, h, w), generator=generator, dtype=torch.float32)
            x = _sample_section(
                transformer, cond, noise, latent_indices=lat_i, clean_latents=clean, clean_indices=clean_i,
                latents_2x=l2x, indices_2x=i2x, latents_4x=l4x, indices_4x=i4x, **kw,
            )
            history = torch.cat([history, x.to(history)], dim=2)
            out.append(x)
    else:
        raise ValueError(f"bad mode {mode!r}")
    return out


def reference_video_latents(sections: list[torch.Tensor], start_latent: torch.Tensor, mode: str = "inverted",
                            upto: int | None = None) -> torch.Tensor:
    """All latents generated by ``sections[:upto]``, in temporal order.

    Inverted: newest-generated first, i.e. ``history[:, :, :generated]``.
    Forward: ``S`` followed by the sections in order (``history[:, :, -generated:]``).
    """
    secs = sections if upto is None else sections[:upto]
    if mode == "inverted":
        return torch.cat(list(reversed(secs)), dim=2)
    return torch.cat([start_latent.to(torch.float32)] + list(secs), dim=2)
