"""The step cache on the tiny transformer: what it skips, what it always computes, what it changes."""
import pytest
import torch

from framepack_core.events import Finished
from framepack_core.speed.step_cache import make_strategy
from framepack_core.speed.teacache import COEFFICIENTS, rescale
from tests.support.helpers import run_events, tiny_request
from tests.support.sampling import SECTIONS, STEPS, sample


def blocks(transformer):
    return len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)


@pytest.fixture(scope="module")
def transformer(tiny_models):
    return tiny_models.transformer


@pytest.fixture(scope="module")
def uncached(transformer):
    return sample(transformer, None)


def test_polynomial_is_the_published_one():
    # TeaCache's published HunyuanVideo fit, 733.226126 x^4 - 401.131952 x^3 + 67.5869174 x^2 - 3.149878 x
    # + 0.0961237896, evaluated by hand at a few points (the cache evaluates it by Horner's rule).
    assert rescale(0.0) == pytest.approx(0.0961237896, rel=1e-12)
    assert rescale(0.1) == pytest.approx(0.1291958242, rel=1e-9)
    assert rescale(0.5) == pytest.approx(11.1030530146, rel=1e-9)
    assert COEFFICIENTS == (733.226126, -401.131952, 67.5869174, -3.149878, 0.0961237896)


def test_no_cache_attaches_nothing(transformer, uncached):
    latents, cache, trace = uncached
    assert cache is None and trace.evaluations == SECTIONS * STEPS * blocks(transformer)
    assert not any(hasattr(m, "_diffusers_hook") and m._diffusers_hook.hooks for m in transformer.modules())


def test_a_cache_that_never_skips_is_exact(transformer, uncached):
    # Every step adds at least the polynomial's constant (0.096) to the accumulator.
    latents, cache, trace = sample(transformer, dict(threshold=0.05))
    assert cache.skipped == 0 and cache.computed == trace.evaluations == SECTIONS * STEPS * blocks(transformer)
    assert torch.equal(latents, uncached[0])


@pytest.fixture(scope="module")
def cached(transformer):
    return {t: sample(transformer, dict(threshold=t)) for t in (0.1, 0.15, 0.3)}


@pytest.mark.parametrize("threshold", [0.1, 0.15, 0.3])
def test_skips_but_always_computes_first_and_last_steps(transformer, uncached, cached, threshold):
    latents, cache, trace = cached[threshold]
    total = SECTIONS * STEPS * blocks(transformer)
    assert cache.computed == trace.evaluations and cache.computed + cache.skipped == total
    assert cache.computed % blocks(transformer) == 0  # all blocks or none
    trail = "".join("c" if ran else "s" for ran in trace.calls)  # c: the blocks ran, s: skipped
    sections = [trail[i:i + STEPS] for i in range(0, len(trail), STEPS)]
    assert len(trace.calls) == STEPS * SECTIONS
    for ran in sections:
        assert ran[0] == ran[-1] == "c" and "s" in ran
        # Each step adds at least the polynomial's minimum (0.052) to the sum: at most threshold/0.052 skips running.
        assert "s" * (int(threshold / 0.052) + 1) not in ran
    distance = ((latents - uncached[0]).norm() / uncached[0].norm()).item()
    assert 0 < distance < 0.03


def test_default_threshold_halves_the_work_and_lower_ones_skip_less(transformer, cached):
    total = SECTIONS * STEPS * blocks(transformer)
    assert total / cached[0.15][1].computed >= 1.8  # the tiny set's modulated input changes little per step
    computed = [cached[t][1].computed for t in (0.1, 0.15, 0.3)]
    assert computed[0] > computed[1] > computed[2]


def test_detached_cache_leaves_the_model_as_it_was(transformer, uncached):
    sample(transformer, dict(threshold=0.15))
    assert torch.equal(sample(transformer, None)[0], uncached[0])


def test_real_cfg_keeps_one_state_per_prompt(transformer):
    exact, _, _ = sample(transformer, None, cfg=3.0, sections=1)
    latents, cache, trace = sample(transformer, dict(threshold=0.05), cfg=3.0, sections=1)
    assert torch.equal(latents, exact) and cache.calls == 2 * STEPS and cache.skipped == 0
    latents, cache, trace = sample(transformer, dict(threshold=0.15), cfg=3.0, sections=1)
    assert cache.skipped > 0 and trace.calls[:2] == [True, True] and trace.calls[-2:] == [True, True]


def test_first_block_cache(transformer, uncached):
    latents, cache, trace = sample(transformer, dict(method="first-block", threshold=1e-9))
    assert cache.skipped == 0 and torch.equal(latents, uncached[0])
    latents, cache, trace = sample(transformer, dict(method="first-block", threshold=100.0))
    # The first call of each section has nothing to compare with; after it only block 0 runs.
    calls = SECTIONS * STEPS
    assert cache.computed == trace.evaluations == calls + SECTIONS * (blocks(transformer) - 1)


def test_unknown_method_is_refused(transformer):
    with pytest.raises(ValueError, match="unknown step cache"):
        make_strategy(method="magic")


@pytest.mark.parametrize("enabled", [True, False])
def test_engine_reports_block_evaluations(tiny_models, square_picture, tmp_path, enabled):
    req = tiny_request(square_picture, prompt="a kite", steps=4, step_cache=enabled)
    finished = run_events(req, tiny_models, tmp_path / "v.mp4")[-1]
    assert isinstance(finished, Finished) and finished.attention == "sdpa"
    if enabled:
        assert finished.step_cache == "magcache"  # the default (README: why)
        assert finished.blocks_computed + finished.blocks_skipped == 4 * blocks(tiny_models.transformer)
        assert finished.blocks_skipped > 0
    else:
        assert (finished.step_cache, finished.blocks_computed, finished.blocks_skipped) == ("", 0, 0)


@pytest.mark.parametrize("flags,expected", [
    ([], {"enabled": True, "method": "magcache", "threshold": 0.15}),
    (["--no-step-cache", "--attention", "flash"], {"enabled": False}),
])
def test_cli_summary_reports_kernel_and_cache(tiny_models, square_picture, tmp_path, monkeypatch, capsys, flags, expected):
    import json

    import app
    import ui.cli

    monkeypatch.setattr(ui.cli, "_stop_on_ctrl_c", lambda run, say: None)  # pytest keeps its own Ctrl+C
    code = app.main(["generate", "--model", "tiny", "--resolution", "128", "--seconds", "1", "--steps", "4",
                     "--image", str(square_picture), "--prompt", "a kite", "--output", str(tmp_path / "v.mp4"), "--json",
                     *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["attention_used"] == "sdpa"
    cache = summary["step_cache"]
    assert {k: cache[k] for k in expected} == expected
    if cache["enabled"]:
        assert cache["blocks_computed"] + cache["blocks_skipped"] == 4 * blocks(tiny_models.transformer)
        assert cache["blocks_skipped"] > 0 and "block evaluations skipped" in err
    else:
        assert "FlashAttention cannot be used here" in err and "step cache: off" in err


def test_methods_are_the_apps_and_the_default_is_its_default():
    import inspect

    from framepack_core.settings import CACHE_METHODS
    from framepack_core.speed.cache_strategy import DEFAULT_METHOD, CacheMethod
    from framepack_core.speed.step_cache import step_cache

    assert [m.value for m in CacheMethod] == list(CACHE_METHODS)
    assert DEFAULT_METHOD is CacheMethod.MAGCACHE == CACHE_METHODS[0]
    assert inspect.signature(step_cache).parameters["method"].default is DEFAULT_METHOD
    strategies = {m: type(make_strategy(m, ratios=[1.0] * 25)) for m in CacheMethod}
    assert {m: s.__name__ for m, s in strategies.items()} == {
        CacheMethod.MAGCACHE: "MagCache", CacheMethod.TEACACHE: "TeaCache", CacheMethod.FIRST_BLOCK: "FirstBlockCache"}
