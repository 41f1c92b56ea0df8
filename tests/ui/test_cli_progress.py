"""The terminal's bar (ui.cli.TerminalProgress) on a terminal: one bar for the run, by the cost of its stages, so
the last section's decode does not sit at 100%; Ctrl+C's answer goes above the bar, not into it."""
import io
import re

from framepack_core.events import Finished, SectionDone, Stage, Step
from ui.cli import TerminalProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _percents(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"section \d/\d: +(\d+)%", text)]


def test_the_bar_counts_the_decode_and_ctrl_c_answers_above_it(monkeypatch):
    from framepack_core.run.progress import CostedProgress

    monkeypatch.setattr(CostedProgress, "learned", None)  # no decode measured by earlier runs of this process
    # A stopped clock: the bar's share of a running decode grows with the time it has taken, which a loaded
    # machine would otherwise add between the Decoding stage and the bar being read (51% seen once).
    monkeypatch.setattr(CostedProgress.__init__, "__defaults__", (lambda: 100.0,))
    screen = Terminal()
    progress = TerminalProgress(screen)
    progress(Stage("sampling", "Sampling section 1 of 1"))
    for step in range(1, 5):
        progress(Step(0, 1, step, 4))
    progress(Stage("decoding", "Decoding section 1 of 1"))
    before_decode = _percents(screen.getvalue())[-1]
    assert before_decode == 50  # all steps done, the decode still to come (as costly as the sampling, unmeasured)
    progress.say("stopping after the current step (the video so far is kept; Ctrl+C again to quit now)…")
    # tqdm clears the bar's line, writes the answer on a line of its own, and draws the bar again under it.
    lines = re.split(r"[\r\n]", screen.getvalue())
    assert "stopping after the current step (the video so far is kept; Ctrl+C again to quit now)…" in lines
    assert "Decoding section 1 of 1" in screen.getvalue().splitlines()[-1]
    progress(SectionDone(0, 1, 37, None, 1.0))
    assert _percents(screen.getvalue())[-1] == 100
    progress(Finished(None, 37, 30, 1, 0, 0, 1, 1.0))
    assert "section 1/1 done: 37 frames" in lines + re.split(r"[\r\n]", screen.getvalue())
