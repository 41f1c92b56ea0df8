"""A bridge: the seconds that lead from one clip's last frame into another's first, written as the
first clip, the bridge, then the second clip, both clips copied as they are (never re-encoded).

    run = Run.bridge("a.mp4", "b.mp4", seconds=2)   # a new run and file; a.mp4 and b.mp4 are unchanged

Sampled inverted (origins.BridgedClips): the first clip's last latent frame is the start (from its
saved latents where this app made it, else its last frame encoded by the VAE), the second clip's
first frame the end frame. The clips must share a size and frame rate (one stream). Settings come
from the first clip (its saved latents, else its MP4's metadata), then the ones given; a pair of
clips not made here needs a prompt.
"""
from __future__ import annotations

from pathlib import Path

from .continuation import continued_settings, copyable_video, own_latents, prompt_clock, refuse_unhonoured
from ..media.video_files import last_frames
from ..method.prompts import continued_prompt
from ..run.same_file import same_file
from ..settings import DEFAULTS, FPS, SETTINGS


def bridge_parts(first, second, seconds: float, folder: Path | None = None, output: Path | None = None,
                 **overrides) -> tuple:
    """(request, origin) of the run that bridges clip `first` into clip `second`; `Run.bridge` starts it.
    ValueError (one sentence) for bad input, before anything is written."""
    from PIL import Image

    from .origins import BridgedClips, Clip
    from ..request import Request, check_value

    seconds = check_value(SETTINGS["seconds"], seconds)  # the table's range, before any arithmetic on it
    first, second = Path(first), Path(second)
    facts = [copyable_video(clip, "bridged") for clip in (first, second)]
    if same_file(first, second):  # by identity: a hard link or another spelling of one clip too
        raise ValueError("A bridge joins two different clips; for a video that leads back into its own start, "
                         "use --loop.")
    (a, b) = facts
    if (a.width, a.height) != (b.width, b.height) or abs(a.fps - b.fps) > 0.01:
        raise ValueError(f"{first.name} is {a.width}x{a.height} at {a.fps:g} fps and {second.name} is "
                         f"{b.width}x{b.height} at {b.fps:g} fps; a bridge joins clips of the same size and frame "
                         "rate.")
    saved = own_latents(first, a)
    refuse_unhonoured(overrides, "A bridge (--bridge)", "inverted", saved)
    settings = continued_settings(first, a, saved, overrides, folder, output)
    window = int(settings.get("window") or DEFAULTS["window"])
    settings |= {"seconds": bridge_seconds(seconds, a.fps, window), "mode": "inverted"}
    if not overrides.get("prompt"):  # the first clip's own timed prompts, on the bridge's timeline
        settings["prompt"] = continued_prompt(settings.get("prompt") or "", prompt_clock(saved, a.frames, a.fps),
                                              settings["seconds"], window)
    for fixed in ("end_image", "loop", "keyframes"):  # the second clip is the end; the first, the start
        settings.pop(fixed, None)
    request = Request.from_fields(image=Image.fromarray(last_frames(first, 1)[0]), image_name=first.name,
                                  **settings)
    origin = BridgedClips(Clip(first.resolve(), a, saved),
                          Clip(second.resolve(), b, own_latents(second, b, from_start=True)))
    return request, origin


def bridge_seconds(seconds: float, fps: float, window: int) -> float:
    """The request's seconds for a bridge of about `seconds` at the clips' frame rate: the whole sections
    (4 x window frames each, at least one) nearest it, counted as the model counts them (30 fps)."""
    if seconds <= 0:
        raise ValueError(f"A bridge lasts more than 0 seconds, not {seconds:g}.")
    sections = max(1, round(seconds * fps / (4 * window)))
    return sections * 4 * window / FPS
