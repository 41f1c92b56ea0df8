"""The step cache on the tiny transformer: what it skips, what it always computes, what it changes."""
import numpy as np
import pytest
import torch

from framepack_core import Finished, GenerationRequest, generate
from framepack_core.method.sections import Conditioning, SectionSettings, run_sections
from framepack_core.speed.step_cache import COEFFICIENTS, StepCache, rescale, step_cache

STEPS, SECTIONS = 10, 2


def conditioning(cfg=False):
    g = torch.Generator().manual_seed(5)
    prompt = (torch.randn(1, 512, 32, generator=g), torch.arange(512)[None] < 12, torch.randn(1, 32, generator=g))
    negative = (torch.randn(1, 512, 32, generator=g), torch.arange(512)[None] < 9, torch.randn(1, 32, generator=g))
    return Conditioning(*prompt, image_embeds=torch.randn(1, 16, 32, generator=g), negative=negative if cfg else None)


class Trace:
    """Per transformer call, whether the blocks really ran, seen from inside a block other than block 0
    (TeaCache reads block 0's norm1 even on skipped steps) and independently of the cache's own counts."""

    def __init__(self, transformer):
        self.calls: list[bool] = []
        self.evaluations = 0
        self.handles = [transformer.register_forward_pre_hook(lambda *_: self.calls.append(False))]
        self.handles.append(transformer.transformer_blocks[-1].ff.register_forward_hook(self._ran))
        for block in transformer.single_transformer_blocks:
            self.handles.append(block.proj_mlp.register_forward_hook(self._evaluated))
        for block in transformer.transformer_blocks:
            self.handles.append(block.ff.register_forward_hook(self._evaluated))

    def _ran(self, *_):
        self.calls[-1] = True

    def _evaluated(self, *_):
        self.evaluations += 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


def sample(transformer, cache: dict | None, cfg=1.0, sections=SECTIONS):
    """Latents of a short run, the cache's counts and a Trace; the cache is reset between sections as in the engine."""
    settings = SectionSettings(seconds=sections * 36 / 30, window=9, steps=STEPS, cfg=cfg)
    start = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    trace = Trace(transformer)
    out = []
    try:
        with step_cache(transformer, cache is not None, steps=STEPS, calls_per_step=1 if cfg == 1 else 2,
                        **(cache or {})) as c:
            for section in run_sections(transformer, conditioning(cfg != 1), start, settings,
                                        torch.Generator().manual_seed(0)):
                out.append(section.latents)
                if c is not None:
                    c.reset()
    finally:
        trace.remove()
    return torch.cat(out, dim=2), c, trace


def blocks(transformer):
    return len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)


@pytest.fixture(scope="module")
def transformer(tiny_models):
    return tiny_models.transformer


@pytest.fixture(scope="module")
def uncached(transformer):
    return sample(transformer, None)


def test_polynomial_is_the_published_one():
    assert rescale(0.0) == pytest.approx(0.0961237896)
    for x in (0.01, 0.05, 0.2, 0.5):
        assert rescale(x) == pytest.approx(np.polyval(COEFFICIENTS, x), rel=1e-12)
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
        StepCache(transformer, method="magic")


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("pic") / "start.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("enabled", [True, False])
def test_engine_reports_block_evaluations(tiny_models, picture, tmp_path, enabled):
    req = GenerationRequest(image=picture, prompt="a kite", seconds=1, steps=4, resolution=128, step_cache=enabled)
    finished = list(generate(req, tiny_models, tmp_path / "v.mp4"))[-1]
    assert isinstance(finished, Finished) and finished.attention == "sdpa"
    if enabled:
        assert finished.step_cache == "teacache"
        assert finished.blocks_computed + finished.blocks_skipped == 4 * blocks(tiny_models.transformer)
        assert finished.blocks_skipped > 0
    else:
        assert (finished.step_cache, finished.blocks_computed, finished.blocks_skipped) == ("", 0, 0)


@pytest.mark.parametrize("flags,expected", [
    ([], {"enabled": True, "method": "teacache", "threshold": 0.15}),
    (["--no-step-cache", "--attention", "flash"], {"enabled": False}),
])
def test_cli_summary_reports_kernel_and_cache(tiny_models, picture, tmp_path, monkeypatch, capsys, flags, expected):
    import json

    import app
    import ui.cli

    monkeypatch.setattr(ui.cli, "_stop_on_ctrl_c", lambda cancel: None)  # pytest keeps its own Ctrl+C
    code = app.main(["generate", "--model", "tiny", "--resolution", "128", "--seconds", "1", "--steps", "4",
                     "--image", str(picture), "--prompt", "a kite", "--output", str(tmp_path / "v.mp4"), "--json",
                     *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["attention"] == "sdpa"
    cache = summary["step_cache"]
    assert {k: cache[k] for k in expected} == expected
    if cache["enabled"]:
        assert cache["blocks_computed"] + cache["blocks_skipped"] == 4 * blocks(tiny_models.transformer)
        assert cache["blocks_skipped"] > 0 and "block evaluations skipped" in err
    else:
        assert "FlashAttention cannot be used here" in err and "step cache: off" in err
