"""The page's helpers for timed prompts and LoRAs, in plain Python (no gradio): the timeline under the
prompt box, and LoRA choices confined to the LoRA folder (the page and the API never name other paths)."""
from __future__ import annotations

import html
import numbers
from pathlib import Path

from framepack_core.settings import DEFAULTS, SamplingMode

_COLOURS = ("#6366f1", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#a855f7", "#14b8a6", "#f97316")


def timeline_html(prompt: str | None, seconds, window: int = DEFAULTS["window"]) -> str:
    """Which prompt covers which seconds, as a bar of coloured spans; a malformed prompt gets its message."""
    from framepack_core.method.prompts import is_timestamped, parse_prompt  # torch: after the page is up

    prompt = prompt or ""
    if not is_timestamped(prompt):
        return '<div class="fp-timeline fp-timeline-hint">One prompt for the whole video. For a prompt per ' \
               'moment write <code>[0s: he waves] [2.5s: he walks away]</code>.</div>'
    try:
        spans = parse_prompt(prompt, float(seconds or 0), window)
    except (ValueError, TypeError) as error:
        return f'<div class="fp-timeline fp-timeline-error">{html.escape(str(error), quote=False)}</div>'
    total = spans[-1].end or 1
    colours = {}
    bar, rows = [], []
    for span in spans:
        colour = colours.setdefault(span.prompt, _COLOURS[len(colours) % len(_COLOURS)])
        width = 100 * (span.end - span.start) / total
        label = f"{span.start:g}–{span.end:.2f} s"
        bar.append(f'<span style="width:{width:.2f}%;background:{colour}" title="{html.escape(label)}"></span>')
        rows.append(f'<li><b style="color:{colour}">{label}</b> {html.escape(span.prompt) or "<i>(empty)</i>"}</li>')
    return (f'<div class="fp-timeline"><div class="fp-timeline-bar" style="display:flex;height:8px;'
            f'border-radius:4px;overflow:hidden">{"".join(bar)}</div><ul>{"".join(rows)}</ul></div>')


def page_keyframes(pictures, times: str | None) -> list[tuple]:
    """The page's keyframe pictures and their times ("1.2, 3:0.5": seconds, optional weight, one per picture,
    in the pictures' order) as the request's (picture, seconds, weight) triples."""
    pictures = [p for p in (pictures or []) if p]
    items = [t for t in (times or "").replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    if len(items) != len(pictures):
        raise ValueError(f"Give one keyframe time for each keyframe picture ({len(pictures)} picture"
                         f"{'s' if len(pictures) != 1 else ''}, {len(items)} time{'s' if len(items) != 1 else ''}).")
    out = []
    for picture, item in zip(pictures, items):
        seconds, _, weight = item.partition(":")
        try:
            out.append((str(getattr(picture, "name", picture)), float(seconds), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"A keyframe time is SECONDS or SECONDS:WEIGHT, not {item!r}.") from None
    return out


def keyframe_timeline_html(pictures, times: str | None, seconds, loop: bool = False,
                           window: int = DEFAULTS["window"]) -> str:
    """Which sections each keyframe conditions (method/keyframes.py), or what is wrong with the keyframes."""
    from framepack_core.method.keyframes import Keyframe, check_keyframes, keyframe_timeline
    from framepack_core.method.prompts import section_times
    from framepack_core.method.schedule import section_count

    try:
        keys = [Keyframe(s, w) for _, s, w in sorted(page_keyframes(pictures, times), key=lambda k: k[1])]
        count = section_count(float(seconds or 0), window)
        check_keyframes(keys, count, window, bool(loop), SamplingMode.INVERTED)
    except (ValueError, TypeError) as error:
        return f'<div class="fp-timeline fp-timeline-error">{html.escape(str(error), quote=False)}</div>'
    spans = section_times(count, window)
    rows = []
    for entry in keyframe_timeline(keys, count, window):
        where = "; ".join(f"{'end' if c['as'] == 'post' else 'start'} of section {c['section'] + 1} "
                          f"({spans[c['section']][0]:.2f}–{spans[c['section']][1]:.2f} s)" for c in entry["sections"])
        rows.append(f"<li><b>Keyframe {entry['keyframe']}</b> at {entry['seconds']:g} s (weight {entry['weight']:g}) "
                    f"→ {entry['at']:.2f} s: {where}</li>")
    if loop:
        rows.append(f"<li><b>Loop</b>: the end of section {count} leads back into the start picture</li>")
    return f'<div class="fp-timeline"><ul>{"".join(rows)}</ul></div>' if rows else ""


def lora_files(folder: Path | None) -> list[str]:
    """The .safetensors files in the LoRA folder, by name."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.suffix.lower() == ".safetensors" and p.is_file())


def lora_rows(folder: Path | None) -> list[list]:
    """The picker's table: every LoRA in the folder, weight 0 (off)."""
    return [[name, 0.0] for name in lora_files(folder)]


def chosen_loras(rows, folder: Path | None) -> tuple[tuple[str, float], ...]:
    """(path, weight) of the rows whose weight is not 0; names must be files of the LoRA folder."""
    chosen = []
    available = set(lora_files(folder))
    for row in _rows(rows):
        if len(row) < 2 or row[0] in (None, ""):
            continue
        name, weight = str(row[0]).strip(), row[1]
        if weight in (None, ""):
            continue
        try:
            weight = float(weight) if not isinstance(weight, numbers.Real) else weight
        except ValueError:
            raise ValueError(f"The weight of LoRA {name} must be a number, not {weight!r}.") from None
        if weight == 0:
            continue
        if name not in available:
            raise ValueError(f"There is no LoRA {name!r} in the LoRA folder ({folder}).")
        chosen.append((str(Path(folder) / name), weight))
    return tuple(chosen)


def parse_lora_text(text: str | None, folder: Path | None) -> tuple[tuple[str, float], ...]:
    """The API's `loras`: "name.safetensors:0.8; other.safetensors" (weight 1 when left out)."""
    rows = []
    for item in (text or "").replace(",", ";").split(";"):
        if item.strip():
            name, sep, weight = item.strip().rpartition(":")
            rows.append([name, weight] if sep else [item.strip(), 1.0])
    return chosen_loras(rows, folder)


def _rows(rows) -> list:
    if rows is None:
        return []
    if hasattr(rows, "values") and hasattr(rows, "columns"):  # a pandas DataFrame
        return rows.values.tolist()
    if isinstance(rows, dict) and "data" in rows:
        return rows["data"]
    return list(rows)
