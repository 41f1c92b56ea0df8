"""How the Outputs tab shows a run, in plain Python (no gradio): a title a person reads (prompt and time), where
its video came from (lineage), its settings as a table, a frame of its own video as its thumbnail, and which
actions apply to it. ui/outputs.py reads the runs; this only presents them.
"""
from __future__ import annotations

import html
from pathlib import Path

from framepack_core.events import Status
from framepack_core.run.record import FinishingRecord, RunRecord
from framepack_core.settings import SETTINGS

# The Outputs tab's buttons, in the order the tab wires them.
ACTIONS = ("remake", "resume", "delete", "extend", "branch", "bridge")
RESUMABLE = (Status.STOPPED, Status.FAILED, Status.RUNNING)  # running without a live owner: a killed run


def title(run) -> str:
    """"The sun sets slowly behind… · 06:12": the prompt's start and the time it was made (the date is its own
    column); the file name stays in the Picked run box."""
    prompt = " ".join(str(run.prompt).split()) or "(no prompt)"
    prompt = prompt if len(prompt) <= 44 else prompt[:43].rstrip() + "…"
    when = str(run.record.created or "")[5:16].replace("T", " ")  # "03-04 11:12"
    return f"{prompt} · {when}" if when else prompt


def sources(record: RunRecord | FinishingRecord) -> list[str]:
    """The runs (by name) whose videos this one continues: the one it extends or branches, the two it bridges (for
    an upscale or interpolation: the video it finishes)."""
    return [Path(str(video)).stem for video in record.continued]


def lineage(record: RunRecord | FinishingRecord) -> str:
    """Where the run's video came from, in a few words: "extends X", "branch of X at 1.2 s", "bridges X → Y"."""
    names = sources(record)
    if isinstance(record, FinishingRecord):
        return f"{record.operation or 'finishing'} of {names[0]}" if names else ""
    if record.branches:
        return f"branch of {names[0]} at {record.from_seconds or 0:g} s"
    if record.bridges:
        return "bridges " + " → ".join(names)
    return f"extends {names[0]}" if names else ""


def available(run, live: bool = False) -> dict[str, bool]:
    """Which of ACTIONS apply to `run` (None: nothing picked); `live`: it is being made now."""
    if run is None:
        return dict.fromkeys(ACTIONS, False)
    finished = run.status == Status.FINISHED and run.files.video.is_file()
    # A record read as running still has a live owner (a dead one's reads as failed): not resumable, not deletable.
    made_now = live or (run.status == Status.RUNNING and bool(run.record.owner))
    return {"remake": not sources(run.record), "resume": run.status in RESUMABLE and not made_now,
            "delete": not made_now,
            "extend": finished, "branch": finished, "bridge": finished}


def bridgeable(first, second) -> bool:
    """Whether a bridge can join `first`'s finished video into `second`'s: both finished, one size (bridge.py)."""
    return (first.name != second.name and all(r.status == Status.FINISHED and r.files.video.is_file()
                                              for r in (first, second))
            and (first.record.width, first.record.height) == (second.record.width, second.record.height))


def settings_table(record: RunRecord) -> str:
    """The run's settings as a two-column markdown table, in the settings table's words; empty ones left out."""
    rows, labels = ["| setting | value |", "|---|---|"], set()
    for name, value in record.settings.items():
        if value in (None, "", [], {}, ()):
            continue
        setting = SETTINGS.get(name)
        label = setting.widget.label if setting is not None and setting.widget is not None else \
            (setting.words if setting is not None else name.replace("_", " "))
        if label in labels:  # two settings in the same words (step cache on, and its method): the name tells them
            label = name.replace("_", " ")
        labels.add(label)
        rows.append(f"| {_cell(label[:1].upper() + label[1:])} | {_cell(_value_text(value))} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(_value_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items())
    return str(value)


def _cell(text: str) -> str:
    """Text safe in one markdown table cell: no pipes or line breaks, and no HTML of its own."""
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def thumbnail(run, cache: Path) -> Path | None:
    """A frame from the middle of the run's own video (finished, else the video so far), kept in `cache` under the
    video's name and time (so a rewritten video gets a new one); the start picture when there is no video yet."""
    video = run.video
    if video is None:
        return run.files.picture if run.files.picture.is_file() else None
    stamp = video.stat().st_mtime_ns
    # The frame count is in the name too: a video renamed into place keeps its time, and one drawn before its record
    # counted its frames shows its first frame; the finished record's count then makes the middle frame anew.
    path = Path(cache) / f"{video.name}.{stamp}.{run.record.frames or 0}.jpg"
    if not path.is_file():
        try:
            frame = middle_frame(video, run.record)
        except (OSError, RuntimeError, StopIteration, ValueError):  # a video being rewritten: its picture for now
            return run.files.picture if run.files.picture.is_file() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.save(path, quality=90)
    return path


def middle_frame(video: Path, record: RunRecord | FinishingRecord):
    """The frame at the middle of `video` (its record's frame count, else its first), as a PIL picture."""
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    frames = record.frames or 0
    # Seeking on the output side decodes up to the frame: exact, and cheap for these short clips.
    params = ["-vf", f"select=eq(n\\,{frames // 2})", "-frames:v", "1"] if frames else []
    reader = imageio_ffmpeg.read_frames(str(video), output_params=params)
    width, height = next(reader)["size"]
    frame = np.frombuffer(next(reader), np.uint8).reshape(height, width, 3)
    reader.close()
    return Image.fromarray(frame.copy())
