"""A prompt per moment: `[0s: the man waves] [2.5s: he turns and walks away]` -> which prompt each section gets.

The syntax is FramePack-Studio's: bracketed prompts, each from its time (seconds, the `s` optional)
until the next one's; a prompt without a leading `[<time>` is one span from 0 s. Pure Python, no
torch: the request's validator and the page's timeline call it as the user types.

Section times come from the schedule's arithmetic: the finished video is the start latent plus
`sections * window` latent frames, latent frame j >= 1 decoding to pixel frames 4j-3 .. 4j. So the
section at temporal position t (0 = next to the start picture) covers pixel frames
[4tK, 4(t+1)K) (the first also frame 0, the last also the final frame). Inverted sampling makes
the sections from the end backwards: generation index i is temporal position `sections - 1 - i`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from framepack_core.settings import FPS, MODES

from .schedule import section_count, video_frame_count

_TIMESTAMPED = re.compile(r"\s*\[\s*[0-9.]")  # a bracket that opens with a number: the timed syntax
_BRACKET = re.compile(r"\[\s*([0-9]*\.?[0-9]+)\s*s?\s*:(.*?)\]", re.S)


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


def parse_prompt(text: str, seconds: float, window: int = 9) -> list[PromptSpan]:
    """The spans of a prompt for a video of `seconds` (made of `window`-frame sections).

    Raises ValueError with one sentence that points at the problem.
    """
    length = video_seconds(seconds, window)
    if not is_timestamped(text):
        return [PromptSpan(0.0, length, text)]  # as typed: the same tensors as before timed prompts existed
    starts, prompts, position = [], [], 0
    while True:
        rest = text[position:]
        if not rest.strip():
            break
        skipped = len(rest) - len(rest.lstrip())
        at = position + skipped
        if text[at] != "[":
            raise ValueError(f"Text outside the brackets at character {at + 1} ({_quote(text[at:])}); "
                             "put every prompt inside [time: prompt].")
        match = _BRACKET.match(text, at)
        close = text.find("]", at)
        if close < 0:
            raise ValueError(f"The bracket opened at character {at + 1} ({_quote(text[at:])}) is never closed.")
        if match is None or match.end() != close + 1:
            raise ValueError(f"{_quote(text[at:close + 1])} is not [time: prompt]; write it like [2.5s: he turns].")
        start = float(match.group(1))
        if starts and start <= starts[-1]:
            raise ValueError(f"The times are out of order: {_quote(match.group(0))} comes after a prompt at "
                             f"{starts[-1]:g}s; each bracket must start later than the one before.")
        if start >= length:
            raise ValueError(f"{_quote(match.group(0))} starts at {start:g}s, past the video's end "
                             f"({length:.2f}s in whole sections).")
        starts.append(start)
        prompts.append(match.group(2).strip())
        position = close + 1
    # The first prompt also covers the moments before its time: every frame has a prompt.
    ends = starts[1:] + [length]
    return [PromptSpan(0.0 if i == 0 else s, e, p) for i, (s, e, p) in enumerate(zip(starts, ends, prompts))]


def distinct_prompts(spans: list[PromptSpan]) -> list[str]:
    """Each prompt once, in order of first use: what is encoded."""
    return list(dict.fromkeys(span.prompt for span in spans))


def section_times(sections: int, window: int) -> list[tuple[float, float]]:
    """Seconds covered by each section, in temporal order (see the module's note)."""
    frames = 4 * window
    times = [(t * frames / FPS, (t + 1) * frames / FPS) for t in range(sections)]
    times[-1] = (times[-1][0], (sections * frames + 1) / FPS)
    return times


def section_prompts(spans: list[PromptSpan], seconds: float, window: int, mode: str,
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

    def covering(start: float, end: float) -> str:
        best = max(spans, key=lambda s: (min(end, s.end) - max(start, s.start), -s.start))
        return best.prompt

    own = [covering(*t) for t in times]
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
    order = range(count - 1, -1, -1) if mode == "inverted" else range(count)
    return [SectionPrompt(i, *times[t], mixes[t]) for i, t in enumerate(order)]


def timeline(spans: list[PromptSpan]) -> list[dict]:
    """The spans as plain values for records and the page: [{"start": 0, "end": 1.5, "prompt": "a"}, ...]."""
    return [{"start": round(s.start, 3), "end": round(s.end, 3), "prompt": s.prompt} for s in spans]


def _quote(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")
