"""A run's progress by the expected cost of its stages (framepack_core/run_progress.py): decoding and writing are
work, measured on the run's first section; the figure moves through a decode and reads 100% only at the end."""
import pytest

from framepack_core.events import SectionDone, Stage, Step
from framepack_core.run.progress import DECODING_CAP, CostedProgress


@pytest.fixture(autouse=True)
def nothing_learned(monkeypatch):
    monkeypatch.setattr(CostedProgress, "learned", None)  # what earlier runs of this process measured


def test_decoding_counts_by_its_measured_cost_and_moves_while_it_runs():
    now = [0.0]
    p = CostedProgress(clock=lambda: now[0])
    p.update(Stage("sampling", "Sampling section 1 of 2"))
    for step in range(1, 5):  # 4 steps of 2 s
        now[0] += 2
        p.update(Step(0, 2, step, 4))
    assert p.fraction == pytest.approx(4 / 16)  # the decode not measured yet: as costly as the sampling (4 steps)
    p.update(Stage("decoding", "Decoding section 1 of 2"))
    now[0] += 4  # half the expected 8 s of decode
    assert p.fraction == pytest.approx(6 / 16)
    assert not p.overdue
    now[0] += 8  # longer than expected: held below the section's end, and said to be overdue
    assert p.fraction == pytest.approx((4 + DECODING_CAP * 4) / 16) and p.overdue
    p.update(Stage("writing", "Writing the video so far"))
    now[0] += 4  # 16 s of decode and write in all: 8 steps' worth
    p.update(SectionDone(0, 2, 37, None, 24.0))
    assert p.decode_steps == pytest.approx(8.0)
    assert p.fraction == pytest.approx(0.5)  # one of two sections, decode included
    p.update(Stage("sampling", "Sampling section 2 of 2"))
    for step in range(1, 5):
        now[0] += 2
        p.update(Step(1, 2, step, 4))
    assert p.fraction == pytest.approx((12 + 4) / 24)  # all steps done: two thirds of the run, not 100%
    p.update(Stage("decoding", "Decoding section 2 of 2"))
    now[0] += 8
    assert p.fraction == pytest.approx((12 + 4 + 4) / 24)
    p.update(SectionDone(1, 2, 73, None, 48.0))
    assert p.fraction == 1.0
    # The next run of this process expects its first decode to cost what this one measured: 8 steps, not 4.
    following = CostedProgress(clock=lambda: now[0])
    following.update(Step(0, 1, 4, 4))
    assert following.fraction == pytest.approx(4 / 12)


def test_a_resumed_run_starts_past_its_finished_sections():
    p = CostedProgress(clock=lambda: 0.0)
    p.update(Stage("decoding", "Rebuilding the 2 finished sections"))  # no steps yet: not a section's decode
    p.update(Step(2, 4, 1, 5))
    assert p.fraction == pytest.approx((2 * 10 + 1) / 40)
