"""The new part of an extension, told truthfully: how many frames `--seconds N` adds at the source's
frame rate, what a video not made here must be given (a prompt), and the settings that describe it.

The model makes whole sections of 4 x window frames. At the app's own 30 fps the new part is whole
sections, as for any run (`n = round(seconds * 30 / (4 * window))`). A source at another rate gets
N seconds at its own rate exactly: round(N * fps) frames, sampled as the whole sections that hold
them, the frames past them cut from the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..method.prompts import parse_prompt
from ..method.schedule import section_count
from ..settings import DEFAULTS, FPS, MAX_RESOLUTION, MIN_RESOLUTION


@dataclass(frozen=True)
class NewPart:
    sections: int
    seconds: float  # what the request carries (another rate: the sections' length at the model's 30 fps)
    frames: int | None  # frames kept of the sections; None: all of them (whole sections)


def new_part(seconds: float, fps: float, window: int) -> NewPart:
    if seconds <= 0:
        raise ValueError(f"--seconds must be more than 0 to extend a video, not {seconds:g}.")
    if abs(fps - FPS) < 0.01:
        return NewPart(section_count(seconds, window), seconds, None)
    frames = max(1, round(seconds * fps))
    sections = math.ceil(frames / (4 * window))
    return NewPart(sections, sections * 4 * window / FPS, frames)


def foreign_settings(settings: dict, facts, source_name: str, prompt_given: bool) -> dict:
    """A video not made here: it must be told what happens next, and it works at its own size, or at the
    run's resolution when it is bigger (extension.working_size)."""
    if not prompt_given and not settings.get("prompt"):
        raise ValueError(f"{source_name} was not made here, so it has no prompt to continue from; say what happens "
                         "next with --prompt (on the page: the prompt box).")
    width, height = (max(16, round(side / 16) * 16) for side in (facts.width, facts.height))
    # The bucket whose area is the working size's (resolution R: about R x R pixels), within the valid range.
    own = min(MAX_RESOLUTION, max(MIN_RESOLUTION, math.ceil(math.sqrt(width * height))))  # own area fits it
    return settings | {"resolution": min(own, int(settings.get("resolution") or DEFAULTS["resolution"]))}


def check_timed_prompt(settings: dict, facts) -> None:
    """Timed prompts of an extension count from the start of the new part: refused here in those words."""
    parse_prompt(settings.get("prompt") or "", settings["seconds"], settings.get("window") or DEFAULTS["window"],
                 extends=facts.frames / facts.fps)
