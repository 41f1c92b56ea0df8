"""A prompt per moment: `[0s: the man waves] [2.5s: he turns and walks away]` -> which prompt each section gets.

The syntax is FramePack-Studio's: bracketed prompts, each from its time (seconds, the `s` optional)
until the next one's; a prompt that does not open with `[...:` is one span from 0 s. Text that opens
like a timed prompt but is not one (`[zz: a]`, `[-1s: a]`) is refused, never read as one plain
prompt; so is a span that no section gets. Extending a video, the times count from the start of
the new part. Pure Python, no torch: the request's validator and the page's timeline call it as
the user types.

Section times come from the schedule's arithmetic: the finished video is the start latent plus
`sections * window` latent frames, latent frame j >= 1 decoding to pixel frames 4j-3 .. 4j. So the
section at temporal position t (0 = next to the start picture) covers pixel frames
[4tK, 4(t+1)K) (the first also frame 0, the last also the final frame). Inverted sampling makes
the sections from the end backwards: generation index i is temporal position `sections - 1 - i`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from framepack_core.settings import DEFAULTS, FPS, MODES, SamplingMode

from .schedule import section_count, video_frame_count

# Opens with a bracket that starts with a number or holds a colon: meant as [time: prompt].
_TIMESTAMPED = re.compile(r"\s*\[(\s*[-+]?[0-9.]|[^\]:]*:)")
_BRACKET = re.compile(r"\[\s*([0-9]*\.?[0-9]+)\s*s?\s*:(.*?)\]", re.S)
_CLOCK = re.compile(r"[0-9]+(\.[0-9]+)?\s*:")  # after "[00:" a clock time's seconds: [00:01: a]
SYNTAX = "write timed prompts as [seconds: prompt], e.g. [0s: he waves] [2.5s: he turns]"


@dataclass(frozen=True)
class PromptSpan:
    start: float  # seconds into the finished video
    end: float
    prompt: str


@dataclass(frozen=True)
class SectionPrompt:
    index: int  # generation order
    start: float  # the section's seconds in the finished video
    end: float
    mix: tuple[tuple[str, float], ...]  # prompts and their weights (sum 1); one entry unless blending


def video_seconds(seconds: float, window: int) -> float:
    """How long the finished video really is: whole sections, 30 frames a second."""
    return video_frame_count(seconds, window) / FPS


def is_timestamped(text: str) -> bool:
    return bool(_TIMESTAMPED.match(text))


def parse_prompt(text: str, seconds: float, window: int = DEFAULTS["window"], extends: float = 0.0) -> list[PromptSpan]:
    """The spans of a prompt for a video of `seconds` (made of `window`-frame sections).

    `extends`: the seconds of the video being extended; the times are the new part's, and the
    messages say so. Raises ValueError with one sentence that points at the problem.
    """
    length = video_seconds(seconds, window)
    if not is_timestamped(text):
        later = _BRACKET.search(text)
        if later is not None:  # never run as one literal prompt with a timed one inside it
            raise ValueError(f"{_quote(text[:later.start()])} comes before the timed prompt "
                             f"{_quote(later.group(0))}; put it in brackets too ([0s: ...]), or leave the brackets out.")
        return [PromptSpan(0.0, length, text)]  # as typed: the same tensors as before timed prompts existed
    end_words = (f"the new part's end ({length:.2f}s in whole sections; extending, times count from the start "
                 f"of the new part, which begins at {extends:.2f}s of the whole video)") if extends else \
        f"the video's end ({length:.2f}s in whole sections)"
    starts, prompts, position = [], [], 0
    while True:
        rest = text[position:]
        if not rest.strip():
            break
        at = position + len(rest) - len(rest.lstrip())
        start, prompt, close = _bracket(text, at)
        if starts and start <= starts[-1]:
            raise ValueError(f"The times are out of order: {_quote(text[at:close + 1])} comes after a prompt at "
                             f"{starts[-1]:g}s; each bracket must start later than the one before.")
        if start >= length:
            raise ValueError(f"{_quote(text[at:close + 1])} starts at {start:g}s, past {end_words}.")
        starts.append(start)
        prompts.append(prompt)
        position = close + 1
    # The first prompt also covers the moments before its time: every frame has a prompt.
    ends = starts[1:] + [length]
    spans = [PromptSpan(0.0 if i == 0 else s, e, p) for i, (s, e, p) in enumerate(zip(starts, ends, prompts))]
    _check_every_span_has_a_section(spans, seconds, window, extends)
    return spans


def continued_prompt(text: str, offset: float, seconds: float, window: int) -> str:
    """A video's own timed prompt, for a new part that continues it from `offset` seconds of it (an extension:
    its end; a branch: its cut; a bridge: the first clip's end) and lasts `seconds`: the prompt in effect at
    `offset` from 0 s, then the later ones at their times less `offset`, each that a section of the new part
    takes. A plain prompt stays as it is."""
    marks = [(float(m.group(1)), m.group(2).strip()) for m in _BRACKET.finditer(text)] if is_timestamped(text) else []
    if not marks:
        return text
    at_offset = [prompt for time, prompt in marks if time <= offset + 1e-6][-1:] or [marks[0][1]]
    later = [(round(time - offset, 4), prompt) for time, prompt in marks if time > offset + 1e-6]
    length = video_seconds(seconds, window)
    starts = [(0.0, at_offset[0])] + [(time, prompt) for time, prompt in later if time < length]
    ends = [time for time, _ in starts[1:]] + [length]
    spans = [PromptSpan(start, end, prompt) for (start, prompt), end in zip(starts, ends)]
    owned = {id(_covering(spans, *t)) for t in section_times(section_count(seconds, window), window)}
    kept = [span for span in spans if id(span) in owned]
    return " ".join(f"[{0 if i == 0 else span.start:g}s: {span.prompt}]" for i, span in enumerate(kept))


def _bracket(text: str, at: int) -> tuple[float, str, int]:
    """(time, prompt, index of the closing bracket) of the `[time: prompt]` at `at`; ValueError otherwise."""
    if text[at] != "[":
        raise ValueError(f"Text outside the brackets at character {at + 1} ({_quote(text[at:])}); "
                         "put every prompt inside [time: prompt].")
    close = text.find("]", at)
    if close < 0:
        raise ValueError(f"The bracket opened at character {at + 1} ({_quote(text[at:])}) is never closed.")
    match = _BRACKET.match(text, at)
    if match is None or match.end() != close + 1:
        time = text[at + 1:close].split(":", 1)[0].strip()
        why = ("no colon after its time" if ":" not in text[at:close] else
               "its time is negative; times count from 0s" if time.startswith("-") else
               f"{_quote(time)} is not a time")
        raise ValueError(f"{_quote(text[at:close + 1])} is not a timed prompt ({why}); {SYNTAX}.")
    prompt = match.group(2).strip()
    if _CLOCK.match(prompt):
        raise ValueError(f"{_quote(text[at:close + 1])} is not a timed prompt (a clock time: times are seconds, "
                         f"e.g. [61s: ...] for 1:01); {SYNTAX}.")
    if not prompt:
        raise ValueError(f"{_quote(text[at:close + 1])} has no prompt after its time; {SYNTAX}.")
    return float(match.group(1)), prompt, close


def _check_every_span_has_a_section(spans: list[PromptSpan], seconds: float, window: int, extends: float) -> None:
    """A span that covers most of no section would be dropped without a word: refuse it instead."""
    times = section_times(section_count(seconds, window), window)
    owned = {id(_covering(spans, *t)) for t in times}
    for span in spans:
        if id(span) not in owned:
            starts = ", ".join(f"{start:g}s" for start, _ in times)
            new = "of the new part " if extends else ""
            raise ValueError(f"The prompt {_quote(span.prompt)} (from {span.start:g}s, {span.end - span.start:.3g}s "
                             "long) gets no section: each section takes the prompt that covers most of it, and the "
                             f"sections {new}start at {starts}; move its time or make the video longer.")


def _covering(spans: list[PromptSpan], start: float, end: float) -> PromptSpan:
    """The span that covers most of [start, end] (the earlier one on a tie)."""
    return max(spans, key=lambda s: (min(end, s.end) - max(start, s.start), -s.start))


def distinct_prompts(spans: list[PromptSpan]) -> list[str]:
    """Each prompt once, in order of first use: what is encoded."""
    return list(dict.fromkeys(span.prompt for span in spans))


def section_times(sections: int, window: int) -> list[tuple[float, float]]:
    """Seconds covered by each section, in temporal order (see the module's note)."""
    frames = 4 * window
    times = [(t * frames / FPS, (t + 1) * frames / FPS) for t in range(sections)]
    times[-1] = (times[-1][0], (sections * frames + 1) / FPS)
    return times


def section_prompts(spans: list[PromptSpan], seconds: float, window: int, mode: SamplingMode,
                    blend: int = 0) -> list[SectionPrompt]:
    """Each section's prompt mix, in generation order.

    A section takes the prompt that covers most of its time (the earlier one on a tie). With
    `blend` N, the N sections after a change cross over linearly: the k-th of them (from 1) weighs
    the new prompt k/(N+1), until the next change.
    """
    if mode not in MODES:
        raise ValueError(f"unknown sampling mode {mode!r}")
    count = section_count(seconds, window)
    times = section_times(count, window)

    own = [_covering(spans, *t).prompt for t in times]
    mixes: list[tuple[tuple[str, float], ...]] = [((p, 1.0),) for p in own]
    if blend > 0:
        for t in range(1, count):
            if own[t] == own[t - 1]:
                continue
            old, new = own[t - 1], own[t]
            for k in range(1, blend + 1):
                u = t + k - 1
                if u >= count or own[u] != new or (u > t and own[u - 1] != new):
                    break
                weight = k / (blend + 1)
                mixes[u] = ((old, 1.0 - weight), (new, weight))
    order = range(count - 1, -1, -1) if mode == SamplingMode.INVERTED else range(count)
    return [SectionPrompt(i, *times[t], mixes[t]) for i, t in enumerate(order)]


def timeline(spans: list[PromptSpan]) -> list[dict]:
    """The spans as plain values for records and the page: [{"start": 0, "end": 1.5, "prompt": "a"}, ...]."""
    return [{"start": round(s.start, 3), "end": round(s.end, 3), "prompt": s.prompt} for s in spans]


def _quote(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")
