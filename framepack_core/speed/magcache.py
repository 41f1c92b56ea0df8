"""MagCache (Ma et al., 2025, arXiv 2506.09045): skip steps while the blocks' residual would barely change.

The ratio of the magnitude of the residual the blocks add at step t to that at step t-1 is
nearly the same for every prompt of a model, so it is calibrated once per model and step count.
On a step past the first `retention` part of the steps, the ratios since the last computed step
are multiplied; while the summed error |1 - product| stays under the threshold, at most K steps
in a row, and this step's ratio is within 0.06 of 1, the blocks are skipped and the last residual
is added again. The rule and numbers are those of the authors' FramePack demo (below); unlike
diffusers' MagCache hook it decides before any block is called (so a block streamer can skip
every copy of a skipped step) and it keeps the per-step 0.06 bound the FramePack demo has.
`calibrate=True` skips nothing and measures the ratios instead (`--cache-calibrate`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .cache_strategy import Call, CacheMethod, FirstBlock, Moment, StepCacheStrategy

# Magnitude ratios at 25 steps, step 0 first, from the MagCache authors' FramePack calibration:
# github.com/Zehong-Ma/MagCache, MagCache4FramePack/magcache_demo_gradio.py (I2V) and
# magcache_demo_gradio_f1.py (F1), `initialize_magcache`, commit df81cb1.
PUBLISHED_STEPS = 25
FRAMEPACK_I2V = (1.0, 1.26562, 1.23438, 1.03125, 1.02344, 1.03906, 1.01562, 1.03906, 1.05469, 1.02344, 1.03906,
                 0.99609, 1.03125, 1.02344, 1.01562, 1.02344, 1.00781, 1.04688, 0.98828, 1.0, 1.00781, 0.98828,
                 0.94141, 0.94141, 0.78906)
FRAMEPACK_F1 = (1.0, 1.25781, 1.08594, 1.02344, 1.00781, 1.02344, 1.00781, 1.02344, 1.05469, 0.99609, 1.03906,
                1.00781, 1.01562, 1.00781, 1.02344, 1.01562, 0.98047, 1.05469, 0.98047, 0.96875, 1.03125, 0.97266,
                0.9375, 0.96484, 0.78516)
# The tiny set is a twin of the I2V model; it borrows its ratios until calibrated.
PUBLISHED = {"framepack": FRAMEPACK_I2V, "framepack-f1": FRAMEPACK_F1, "tiny": FRAMEPACK_I2V}

# The demo's defaults: retain the first 20% of steps; at most K skipped steps in a row. Its README
# times two settings, E010K3R02 and E015K4R02 (threshold, K, retention); with this app's default
# threshold 0.15, K = 4 makes the second, the faster one (FramePack 5 s on an L20: 4 min against
# TeaCache's 4 min 40 s; F1: 3 min 40 s against 4 min; README of MagCache4FramePack).
RETENTION = 0.2
MAX_SKIPPED = 4
MAX_STEP_CHANGE = 0.06


def nearest_interp(ratios, steps: int) -> list[float]:
    """The authors' resampling to another step count: the nearest calibrated step of each step."""
    if steps == 1:
        return [float(ratios[-1])]
    scale = (len(ratios) - 1) / (steps - 1)
    return [float(ratios[int(round(i * scale))]) for i in range(steps)]  # numpy's round: half to even, as theirs


def ratios_for(model: str, steps: int) -> list[float]:
    """This model's ratios at `steps`: a calibration saved here for exactly that, else the published ones."""
    calibrated = calibration_path(model, steps)
    if calibrated.exists():
        return [float(r) for r in json.loads(calibrated.read_text())["ratios"]]
    return nearest_interp(PUBLISHED.get(model, FRAMEPACK_I2V), steps)


def calibration_path(model: str, steps: int) -> Path:
    root = os.environ.get("FRAMEPACK_CACHE") or Path.home() / ".cache" / "framepack"
    return Path(root) / "magcache" / f"{model}-{steps}.json"


def save_calibration(model: str, steps: int, ratios: list[float]) -> Path:
    path = calibration_path(model, steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps({"model": model, "steps": steps, "ratios": ratios}) + "\n")
    os.replace(tmp, path)
    return path


@dataclass
class MagState:
    """One branch's (positive or negative prompt) accumulation since the last computed step."""
    ratio: float = 1.0
    steps: int = 0
    error: float = 0.0

    def skip(self, step: int, ratios: list[float], threshold: float, total_steps: int,
             retention: float = RETENTION, max_skipped: int = MAX_SKIPPED) -> bool:
        """The demo's rule for `step` (0-based); updates the accumulation."""
        if step < int(retention * total_steps) or step < 1:
            return False
        current = ratios[step] if step < len(ratios) else 1.0
        self.ratio *= current
        self.error += abs(1 - self.ratio)
        self.steps += 1
        if self.error <= threshold and self.steps <= max_skipped and abs(1 - current) <= MAX_STEP_CHANGE:
            return True
        self.ratio, self.steps, self.error = 1.0, 0, 0.0
        return False


def magnitude_ratio(residual, previous) -> float:
    """Mean over tokens of |r_t| / |r_t-1| (the authors' calibration measure)."""
    return (residual.float().norm(dim=-1) / previous.float().norm(dim=-1)).mean().item()


class MagCache(StepCacheStrategy):
    method = CacheMethod.MAGCACHE
    decides_at = Moment.CALL  # needs no tensor: a skipped step runs no block at all

    def __init__(self, threshold: float, steps: int, branches: int, ratios: list[float] | None = None,
                 calibrate: bool = False):
        if ratios is None and not calibrate:
            raise ValueError("MagCache needs magnitude ratios for the model (speed/magcache.py ratios_for)")
        super().__init__(threshold, steps, branches)
        self.ratios, self.calibrate = ratios, calibrate
        self.calibration: list[list[float]] = []  # calibrating: each section's ratios, step 0 first
        self._measured: list[float] = []  # calibrating: this section's ratios (the prompt's branch)

    def reset(self) -> None:
        if self._measured:  # a calibration keeps every section it saw
            self.calibration.append([1.0] + self._measured)
            self._measured = []
        self._states = [MagState() for _ in range(self.branches)]

    def decide(self, call: Call, first: FirstBlock | None) -> bool:
        if self.calibrate or not call.can_skip:
            return True
        return not self._states[call.branch].skip(call.step, self.ratios, self.threshold, self.steps)

    def observe(self, call: Call, residual, previous) -> None:
        if self.calibrate and call.branch == 0 and previous is not None:
            self._measured.append(round(magnitude_ratio(residual, previous), 5))

    def calibrated_ratios(self) -> list[float]:
        """Calibrating: the ratios of every section, averaged step by step (5 decimals, as published)."""
        sections = [c for c in self.calibration if len(c) == self.steps]
        return [round(sum(values) / len(values), 5) for values in zip(*sections)] if sections else []
