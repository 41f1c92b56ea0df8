"""MagCache: the published ratios, the authors' skip rule, calibration, on a stand-in transformer whose
residual magnitudes are known, and on the tiny set end to end."""
import json

import pytest
import torch

from framepack_core.speed.magcache import (
    FRAMEPACK_F1,
    FRAMEPACK_I2V,
    MagState,
    nearest_interp,
    ratios_for,
)
from framepack_core.speed.step_cache import make_strategy, step_cache
from tests.support.helpers import run_events, tiny_request

# Steps the authors' FramePack rule skips at 25 steps, worked out by hand from their ratios
# (threshold 0.15, at most 4 in a row, the first int(0.2 * 25) = 5 steps kept). I2V, steps 5-10:
# 5: 1.03906 -> error .039 skip; 6: x1.01562 -> product 1.0553, error .094 skip; 7: x1.03906 -> 1.0965,
# error .191 > .15 compute; 8: 1.05469 skip; 9: x1.02344 -> 1.0794, error .134 skip; 10: error .256 compute.
SKIPPED_I2V = [5, 6, 8, 9, 11, 12, 13, 15, 16, 17, 19, 20, 21, 22]
SKIPPED_F1 = [5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 18, 19, 20, 21, 23]


class Block(torch.nn.Module):
    """Adds magnitude[step] * direction / blocks: the blocks together add exactly magnitude[step] * direction."""

    def __init__(self, owner):
        super().__init__()
        self.owner = [owner]  # not a submodule
        self.runs = 0

    def forward(self, hidden_states, encoder_hidden_states, temb):
        self.runs += 1
        owner = self.owner[0]
        share = owner.magnitudes[int(temb)] / owner.block_count
        return hidden_states + share * owner.direction, encoder_hidden_states


class StandIn(torch.nn.Module):
    """The shape of the FramePack transformer that the step cache sees: two block lists, called in order."""

    def __init__(self, magnitudes, tokens=6, width=4):
        super().__init__()
        self.magnitudes = magnitudes
        self.direction = torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(1))
        self.transformer_blocks = torch.nn.ModuleList([Block(self) for _ in range(2)])
        self.single_transformer_blocks = torch.nn.ModuleList([Block(self) for _ in range(3)])
        self.block_count = 5

    def forward(self, hidden_states, timestep):
        encoder = torch.zeros(1, 2, hidden_states.shape[-1])
        for block in [*self.transformer_blocks, *self.single_transformer_blocks]:
            hidden_states, encoder = block(hidden_states, encoder, timestep)
        return hidden_states


def magnitudes(ratios):
    out = [1.0]
    for r in ratios[1:]:
        out.append(out[-1] * r)
    return out


def run_section(model, steps):
    """One section: a call per step; for each, whether the blocks ran, the input and the output."""
    calls = []
    for step in range(steps):
        x = torch.full((1, 6, 4), float(step))
        before = model.transformer_blocks[0].runs
        y = model(x, torch.tensor(step))
        calls.append((model.transformer_blocks[0].runs > before, x, y))
    return calls


@pytest.mark.parametrize("ratios, skipped", [(FRAMEPACK_I2V, SKIPPED_I2V), (FRAMEPACK_F1, SKIPPED_F1)])
def test_published_ratios_skip_the_steps_the_rule_gives(ratios, skipped):
    model = StandIn(magnitudes(ratios))
    with step_cache(model, True, "magcache", 0.15, steps=25, ratios=list(ratios)) as cache:
        for _ in range(2):  # two sections: the same steps each time, nothing carried over
            calls = run_section(model, 25)
            assert [i for i, (ran, _, _) in enumerate(calls) if not ran] == skipped
            cache.reset()
        assert cache.skipped == 2 * len(skipped) * 5 and cache.computed == 2 * (25 - len(skipped)) * 5
    # A skipped step adds the residual of the last computed step, exactly.
    for step, (ran, x, y) in enumerate(calls):
        if ran:
            residual = y - x
        else:
            assert torch.equal(y, x + residual), step
    assert all(block.runs == 2 * (25 - len(skipped)) for block in model.single_transformer_blocks)


def test_the_rule_by_hand():
    state, ratios = MagState(), [1.0, 1.2, 1.03, 1.02, 1.03, 1.05, 0.9]
    # Step 0 is always kept; step 1 (past retention int(0.2 * 7) = 1) errs .2 > .1; steps 2, 3 sum .03 + .0506;
    # step 4 would make .163; step 5 errs .05; step 6 changes by .1 > .06 on its own.
    assert [state.skip(i, ratios, 0.1, 7) for i in range(7)] == [False, False, True, True, False, True, False]


def test_ratios_follow_the_step_count_by_nearest_step():
    assert nearest_interp(FRAMEPACK_I2V, 25) == list(FRAMEPACK_I2V)
    assert nearest_interp(FRAMEPACK_I2V, 3) == [1.0, 1.03125, 0.78906]
    assert nearest_interp(FRAMEPACK_I2V, 10) == [1.0, 1.03125, 1.03906, 1.05469, 0.99609, 1.02344, 1.00781, 1.0,
                                                 0.98828, 0.78906]
    assert nearest_interp(FRAMEPACK_F1, 1) == [0.78516]
    assert ratios_for("framepack-f1", 25) == list(FRAMEPACK_F1)


def test_calibration_measures_the_known_magnitudes_and_skips_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEPACK_CACHE", str(tmp_path))
    model = StandIn(magnitudes(FRAMEPACK_F1))
    with step_cache(model, True, "magcache", 0.15, steps=25, calibrate=True) as cache:
        for _ in range(2):
            assert all(ran for ran, _, _ in run_section(model, 25))
            cache.reset()
    assert cache.strategy.calibrated_ratios() == pytest.approx(list(FRAMEPACK_F1), abs=1e-5)


def test_magcache_needs_ratios():
    with pytest.raises(ValueError, match="ratios"):
        make_strategy("magcache", steps=3)


def test_tiny_run_with_magcache_and_a_calibration(tiny_models, picture, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEPACK_CACHE", str(tmp_path))
    # Three steps: ratios [1.0, 1.03125, 0.78906]; step 1 is skipped (error .031), step 2 computes.
    finished = run_events(tiny_request(picture, cache_method="magcache"), tiny_models, tmp_path / "m.mp4")[-1]
    blocks = len(tiny_models.transformer.transformer_blocks) + len(tiny_models.transformer.single_transformer_blocks)
    assert (finished.step_cache, finished.blocks_skipped, finished.blocks_computed) == ("magcache", blocks, 2 * blocks)
    calibrated = run_events(tiny_request(picture, steps=2, cache_calibrate=True), tiny_models, tmp_path / "c.mp4")[-1]
    assert calibrated.blocks_skipped == 0
    saved = json.loads((tmp_path / "magcache" / "tiny-2.json").read_text())
    assert saved["ratios"][0] == 1.0 and len(saved["ratios"]) == 2 and saved["ratios"][1] > 0
    assert ratios_for("tiny", 2) == saved["ratios"]


@torch.no_grad()
def test_skipped_steps_cost_no_copies_when_streaming():
    from bench.support.synthetic import section_inputs, SMALL_CONFIG, small_transformer
    from framepack_core.speed.precision import tensor_bytes
    from memory import ModelManager, SimulatedDevice

    model = small_transformer(num_single_layers=12)
    inputs = section_inputs(SMALL_CONFIG, 8, 8)
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3)
    moved = {}
    for method in (None, "magcache"):
        # Ten steps: the published ratios at the nearest steps skip steps 2, 3, 5, 6, 7 and 8.
        with manager.use(model), step_cache(model, method is not None, "magcache", 0.15, steps=10,
                                            ratios=nearest_interp(FRAMEPACK_I2V, 10), gates=manager.gates) as cache:
            before = device.bytes_moved
            for step in range(10):
                model(**(inputs | {"timestep": torch.tensor([1000.0 - 100 * step])}))
            moved[method] = device.bytes_moved - before
    computed_ratio = cache.computed / (cache.computed + cache.skipped)
    assert computed_ratio == pytest.approx(4 / 10)
    assert moved["magcache"] / moved[None] == pytest.approx(computed_ratio, abs=0.05)
