"""How much of a run is done, every stage counted by its expected cost: one figure for the page's bar and ETA,
the queue's percent and the terminal's bar.

A section is its sampling steps plus its decode and write. Counting steps alone read 100% through the last
decode, which on a CPU is about half the run. The decode's cost, in steps, is measured on this run's first
section (its decode and write seconds over its seconds per step); before that it is taken as one section's
sampling (DECODE_PRIOR). While a decode runs, its share grows with the time it has taken against the time it is
expected to take (never past 95%, until it ends), so the figure and the ETA keep moving through it.
"""
from __future__ import annotations

import time
from typing import Callable

from ..events import SectionDone, Stage, StageName, Step

DECODE_PRIOR = 1.0  # a section's decode and write, in sections' sampling, until one is measured
DECODING_CAP = 0.95  # a decode taking longer than expected waits here, not at 100%


class CostedProgress:
    # The last decode cost measured in this process (same machine, usually the same model and size): the next
    # run's first section is expected to cost that instead of DECODE_PRIOR.
    learned: float | None = None

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.sections = self.steps = 0
        self.done_sections = 0  # sampled, decoded and written
        self.step = 0  # steps of the current section
        self.decode_steps: float | None = None  # a decode and write, in steps (measured on this run)
        self._step_times: list[float] = []  # when each step of the current section ended
        self._section_started: float | None = None
        self._decode_started: float | None = None

    def update(self, event) -> None:
        now = self.clock()
        if isinstance(event, Stage) and event.name == StageName.SAMPLING:
            self._section_started, self._step_times, self.step = now, [], 0
            self._decode_started = None
        elif isinstance(event, Step):
            self.sections, self.steps, self.step = event.sections, event.steps, event.step
            self.done_sections = event.section  # a resumed run starts past its finished sections
            self._step_times.append(now)
        elif isinstance(event, Stage) and event.name == StageName.DECODING and self.step:
            self._decode_started = now  # a section's decode (a resume's rebuild has no steps before it)
        elif isinstance(event, SectionDone):
            self.sections = event.sections
            self.done_sections = event.section + 1
            self._measure(now)
            self.step, self._decode_started = 0, None

    def _measure(self, now: float) -> None:
        if self.decode_steps is not None or self._decode_started is None or not self._step_times:
            return
        per_step = self._per_step()
        if per_step:
            self.decode_steps = CostedProgress.learned = (now - self._decode_started) / per_step

    def _per_step(self) -> float | None:
        if self._section_started is None or not self._step_times:
            return None
        return (self._step_times[-1] - self._section_started) / len(self._step_times)

    @property
    def decode_cost(self) -> float:
        """A section's decode and write, in steps."""
        if self.decode_steps is not None:
            return self.decode_steps
        return CostedProgress.learned if CostedProgress.learned is not None else DECODE_PRIOR * self.steps

    @property
    def overdue(self) -> bool:
        """A decode running past what it was expected to take: no honest time left can be given."""
        return self._decode_started is not None and self._decoding_share() >= DECODING_CAP

    @property
    def fraction(self) -> float:
        """0..1 of the run's expected work done (0 before the first step is known)."""
        if not self.sections or not self.steps:
            return 0.0
        section = self.steps + self.decode_cost
        current = self.step + self._decoding_share() * self.decode_cost
        return min((self.done_sections * section + current) / (self.sections * section), 1.0)

    def _decoding_share(self) -> float:
        if self._decode_started is None:
            return 0.0
        per_step = self._per_step()
        if not per_step:
            return 0.0
        expected = self.decode_cost * per_step
        return min((self.clock() - self._decode_started) / expected, DECODING_CAP) if expected > 0 else 0.0
