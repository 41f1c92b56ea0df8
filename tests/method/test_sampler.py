"""The flow-matching UniPC sampler against denoisers whose answers are known in closed form."""
import math

import pytest
import torch

import framepack_core.method.sampler as sampler
from framepack_core.method.sampler import flux_mu, flux_sigmas, sample_unipc


def test_flux_mu():
    assert flux_mu(256) == pytest.approx(0.5)
    assert flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(10**6) == math.log(7.0)
    assert flux_mu(1234, shift=3.0) == math.log(3.0)
    # 640 bucket, window 9: 9 * 76 * 80 / 4 tokens, past the cap.
    assert flux_mu(9 * 76 * 80 // 4) == math.log(7.0)


def test_flux_sigmas():
    mu = 0.8
    sigmas = flux_sigmas(25, mu)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (26,)
    assert sigmas[0] == 1 and sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    t = 1 - 7 / 25
    assert sigmas[7].item() == pytest.approx(math.exp(mu) / (math.exp(mu) + 1 / t - 1), rel=1e-6)


def gaussian_denoiser(mean, std, calls):
    """Exact E[x0 | x_sigma] for x0 ~ N(mean, std^2), x_sigma = (1 - sigma) x0 + sigma * noise."""

    def denoise(x, sigma):
        calls.append(float(sigma[0]))
        s = sigma.reshape(-1, 1, 1, 1, 1)
        var = (1 - s) ** 2 * std**2 + s**2
        return mean + (1 - s) * std**2 / var * (x - (1 - s) * mean)

    return denoise


def run_gaussian(steps, variant="bh1", mu=1.0):
    """(error of the final x0, error of the path while sigma >= 0.3, denoiser calls)."""
    torch.manual_seed(0)
    noise = torch.randn(1, 4, 3, 4, 4)
    mean, std, calls, path = 0.3, 0.5, [], []
    sigmas = flux_sigmas(steps, mu)
    result = sample_unipc(gaussian_denoiser(mean, std, calls), noise.clone(), sigmas, variant,
                          callback=lambda i, n, x, x0: path.append(x.double()))
    # The probability-flow ODE keeps x_sigma = (1 - sigma) mean + r(sigma) noise, r^2 = (1 - sigma)^2 std^2 + sigma^2,
    # so both the path and the final x0 prediction (at the last nonzero sigma) are known exactly.
    r = lambda s: torch.sqrt((1 - s) ** 2 * std**2 + s**2)
    exact = lambda s: (1 - s) * mean + r(s) * noise.double()
    last = sigmas[-2].double()
    final = (result.double() - (mean + (1 - last) * std**2 / r(last) * noise.double())).abs().max().item()
    early = [(x - exact(sigmas[i].double())).abs().max().item() for i, x in enumerate(path) if sigmas[i] >= 0.3]
    return final, max(early), calls


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_gaussian_follows_the_exact_flow(variant):
    results = {steps: run_gaussian(steps, variant) for steps in (8, 25, 50)}
    path_errors = [results[n][1] for n in (8, 25, 50)]
    assert max(path_errors) < 2e-4
    assert path_errors[2] < path_errors[1]
    # Near sigma = 0 the shifted schedule's last steps stay large (h = ln 2 for the final one, whatever
    # N is), so the final error levels off instead of vanishing; it must still be small.
    assert results[25][0] < 0.05


def test_one_call_per_step_and_last_sigma_never_evaluated():
    for steps in (1, 2, 3, 4, 25):
        _, _, calls = run_gaussian(steps)
        sigmas = flux_sigmas(steps, 1.0)
        assert len(calls) == steps
        assert calls == pytest.approx(sigmas[:-1].tolist())  # sigma_N = 0 never reaches the model


def test_constant_data_prediction_follows_the_exact_path():
    """With D(x, s) = c the flow is known: x_sigma = (1 - sigma) c + sigma * noise at every step."""
    torch.manual_seed(1)
    noise, c = torch.randn(1, 2, 2, 3, 3), torch.randn(1, 2, 2, 3, 3)
    sigmas = flux_sigmas(10, 1.2)
    seen = []
    result = sample_unipc(lambda x, s: c.clone(), noise.clone(), sigmas, callback=lambda i, n, x, x0: seen.append(x))
    assert torch.equal(result, c) and len(seen) == 10
    for i, x in enumerate(seen):
        expected = (1 - sigmas[i]) * c + sigmas[i] * noise
        assert torch.allclose(x, expected, atol=1e-5), i


@pytest.mark.parametrize("steps,orders", [
    (1, []), (2, [1]), (3, [1, 2]), (4, [1, 2, 3]), (6, [1, 2, 3, 3, 3]), (25, [1, 2] + [3] * 22),
])
def test_order_ramp_up(monkeypatch, steps, orders):
    seen = []
    real = sampler._unipc_update

    def spy(denoise, x, m, s, t, order, variant):
        seen.append(order)
        assert len(m) >= order and len(m) == len(s) <= 3
        return real(denoise, x, m, s, t, order, variant)

    monkeypatch.setattr(sampler, "_unipc_update", spy)
    run_gaussian(steps)
    assert seen == orders


def test_variants_differ_but_agree_closely():
    e1, p1, _ = run_gaussian(8, "bh1")
    e2, p2, _ = run_gaussian(8, "bh2")
    assert (e1, p1) != (e2, p2) and abs(e1 - e2) < 1e-2


def test_first_steps_by_hand():
    """Steps 1 and 2 of bh1 written out from METHOD.md for a linear denoiser D(x, s) = a * x."""
    a = 0.7
    x0 = torch.full((1, 1, 1, 1, 1), 2.0)
    sigmas = flux_sigmas(3, 0.9)
    xs = {}
    out = sample_unipc(lambda x, s: a * x, x0.clone(), sigmas, callback=lambda i, n, x, m: xs.setdefault(i, x.item()))
    s0, s1, s2 = (float(v) for v in sigmas[:3])
    lam = lambda u: -math.log(u)
    # step 1 (order 1): corrector only, rho_c = 0.5, B = hh
    m0 = a * 2.0
    h = lam(s1) - lam(s0); hh = -h; phi1 = math.expm1(hh)
    base = s1 / s0 * 2.0 - phi1 * m0
    mt = a * base
    x1 = base - hh * 0.5 * (mt - m0)
    assert xs[1] == pytest.approx(x1, rel=1e-5)
    # step 2 (order 2): predictor rho_p = 0.5, corrector solves R rho = b
    h = lam(s2) - lam(s1); hh = -h; phi1 = math.expm1(hh)
    r1 = (lam(s0) - lam(s1)) / h
    d1 = (m0 - mt) / r1
    base = s2 / s1 * x1 - phi1 * mt
    xp = base - hh * 0.5 * d1
    m2 = a * xp
    g1 = phi1 / hh - 1
    g2 = g1 / hh - 0.5
    b = [g1 / hh, g2 * 2 / hh]
    # R = [[1, 1], [r1, 1]]
    det = 1 - r1
    rho = [(b[0] - b[1]) / det, (b[1] - r1 * b[0]) / det]
    assert m2 == pytest.approx(out.item(), rel=1e-5)
    x2 = base - hh * (rho[0] * d1 + rho[1] * (m2 - mt))
    assert xs[2] == pytest.approx(x2, rel=1e-5)
    assert abs(x2 - xp) > 1e-3  # the corrector moved the prediction: the check above saw the whole update
