"""Progress of one run as the page shows it: stage, section i of n, step j of N (a finishing run: frame j of N
and frames/s), elapsed, ETA.

Pure bookkeeping over engine events plus an HTML rendering, so that it is tested without a
browser. Times come from a clock passed in (time.monotonic by default).
"""
from __future__ import annotations

import html
import time
from typing import Callable

from framepack_core.events import Failed, Finished, Notice, SectionDone, Stage, StageName, Status, Step
from framepack_core.run.progress import CostedProgress

IDLE_MESSAGE = "Drop in a picture, describe what should happen, and press Start."


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RunProgress:
    def __init__(self, clock: Callable[[], float] = time.monotonic, frames: bool = False):
        self.clock = clock
        self.counts_frames = frames  # a finishing run: its Steps are frames done of the total, one "section"
        self.started = clock()
        self.stage = "Starting"
        self.section = self.sections = 0  # section is 1-based for display; 0 before sampling
        self.step = self.steps = 0
        self.frames = 0
        self.notices: list[str] = []
        self.state = Status.RUNNING  # then stopping, finished, stopped or failed
        self.error = ""
        self.ended: float | None = None
        self._sampling_started: float | None = None  # ETA counts from here: loading is not repeated
        self._done_at_start = 0.0  # what a resumed finishing run had done before: not this run's pace
        self.work = CostedProgress(clock)  # decode and write counted with the steps, by their cost

    def update(self, event) -> None:
        self.work.update(event)
        if isinstance(event, Stage):
            self.stage = event.message
            if event.name == StageName.SAMPLING and self._sampling_started is None:
                self._sampling_started = self.clock()
        elif isinstance(event, Step):
            self.section, self.sections = event.section + 1, event.sections
            self.step, self.steps = event.step, event.steps
            if self.counts_frames and self._sampling_started is None:
                self._sampling_started, self._done_at_start = self.clock(), (event.step - 1) / max(event.steps, 1)
        elif isinstance(event, SectionDone):
            self.frames = event.frames
        elif isinstance(event, Notice):
            self.notices.append(event.message)
        elif isinstance(event, Finished):
            self.frames = event.frames or self.frames
            self.state = Status.STOPPED if event.stopped else Status.FINISHED
            self.ended = self.clock()
        elif isinstance(event, Failed):
            self.state, self.error, self.ended = Status.FAILED, event.message, self.clock()

    def stopping(self) -> None:
        if self.state == Status.RUNNING:
            self.state = Status.STOPPING

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else self.clock()) - self.started

    @property
    def fraction(self) -> float:
        if self.state == Status.FINISHED:
            return 1.0
        return self.work.fraction

    @property
    def eta(self) -> float | None:
        """Seconds left, from the pace so far over the work's expected cost (decodes included); None if unknown."""
        if self.state not in _GOING or self._sampling_started is None or self.work.overdue:
            return None  # an overdue decode: "about 0:00 left" would be a guess, and wrong
        done = self.fraction
        if done <= self._done_at_start:
            return None
        spent = self.clock() - self._sampling_started
        return spent * (1 - done) / (done - self._done_at_start)

    def html(self) -> str:
        return render(self)


_GOING = (Status.RUNNING, Status.STOPPING)


def render(p: RunProgress) -> str:
    headline = {
        Status.RUNNING: p.stage, Status.STOPPING: "Stopping after this step…",
        Status.FINISHED: f"Done: {p.frames} frames", Status.STOPPED: "Stopped; the video so far is kept" if p.frames
        else "Stopped before the first section was done", Status.FAILED: p.error,
    }[p.state]
    times = f"{clock_text(p.elapsed)} elapsed"
    if p.eta is not None:
        times += f" · about {clock_text(p.eta)} left"
    details = []
    if p.sections and p.counts_frames:
        details.append(f"Frame {p.step} of {p.steps}")
        spent = p.clock() - p._sampling_started
        if spent > 0 and p.state in _GOING:
            details.append(f"{(p.fraction - p._done_at_start) * p.steps / spent:.2f} frames/s")
    elif p.sections:
        details += [f"Section {p.section} of {p.sections}", f"Step {p.step} of {p.steps}"]
    if p.frames:
        details.append(f"{p.frames} frames so far" if p.state in _GOING else f"{p.frames} frames")
    notes = "".join(f'<div class="fp-note">{html.escape(n)}</div>' for n in p.notices)
    return (
        f'<div class="fp-progress fp-{p.state}">'
        f'<div class="fp-head"><span class="fp-stage">{html.escape(headline)}</span>'
        f'<span class="fp-times">{times}</span></div>'
        f'<div class="fp-bar"><div style="width:{100 * p.fraction:.1f}%"></div></div>'
        f'<div class="fp-details">{" · ".join(details) or "&nbsp;"}</div>{notes}</div>'
    )


def stages_markdown(stages: list[dict] | None) -> str:
    """What each stage of a run cost (the record's `stages`), as a table; "" when there is none. Columns that no
    stage has a figure for (device peaks on a CPU, say) are left out, so the table fits the page's column."""
    if not stages:
        return ""
    # Short headings (one word or two): long ones broke mid-word in the page's narrow column; the note below says
    # what the two peaks are.
    columns = [("VRAM peak", ("vram_peak_allocated", "vram_peak_reserved")), ("streamed", ("bytes_streamed",)),
               ("RAM peak", ("rss_anon_peak",)), ("pinned", ("pinned_bytes",)), ("planned", ("planned_bytes",))]
    columns = [(head, keys) for head, keys in columns if any(s.get(key) is not None for s in stages for key in keys)]
    rows = ["| " + " | ".join(["stage", "seconds"] + [head for head, _ in columns]) + " |",
            "|---|" + "---:|" * (1 + len(columns))]
    for s in stages:
        name = s["stage"].replace("_", " ") + (f" {s['section'] + 1}" if s.get("section") is not None else "")
        cells = [" / ".join(bytes_text(s.get(key)) for key in keys) for _, keys in columns]
        rows.append("| " + " | ".join([name, f"{s['seconds']:.2f}", *cells]) + " |")
    notes = [note for head, note in (("VRAM peak", "VRAM peak: allocated / reserved."),
                                     ("RAM peak", "RAM peak: the process's own memory (RssAnon).")) if
             head in {h for h, _ in columns}]
    return "\n".join(rows) + (f"\n\n{' '.join(notes)}" if notes else "")


def bytes_text(count: int | None) -> str:
    """1.23 GiB, 45.6 MiB; "–" where the figure is unknown (e.g. device peaks on a CPU)."""
    if count is None:
        return "–"
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def idle_html(message: str = IDLE_MESSAGE, error: bool = False) -> str:
    kind = "fp-failed" if error else "fp-idle"
    return (f'<div class="fp-progress {kind}"><div class="fp-head"><span class="fp-stage">'
            f'{html.escape(message)}</span></div></div>')
