"""The Outputs tab's work, in plain Python (no gradio): the runs in the outputs folder and what to do with them.

Runs are read from their JSON records every time (run/files.py names them), so videos made by
`generate`, the queue or another page show up as soon as their record is written. A run is named by
its record's stem (`<date>-<time>_<seed>`); every action takes that name and acts on that run's
files only.
"""
from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from glob import escape as _glob_escape
from functools import partial
from pathlib import Path

from framepack_core.events import Status
from framepack_core.request import remake_fields
from framepack_core.run.files import RunFiles, live_owner
from framepack_core.run.record import FinishingRecord, NotARecord, RunRecord, record_of
from framepack_core.run.owner import owner_words
from framepack_core.settings import SettingKind

from .creative import lora_rows
from .handlers import PAGE_SETTINGS, Handlers, refused, starts, summary_markdown
from .outputs_view import RESUMABLE, available, bridgeable, lineage, settings_table, sources, thumbnail, title

log = logging.getLogger(__name__)
# The list's columns (outputs_view.title names a run by its prompt and time; File is the name actions take).
COLUMNS = ["Run", "Length", "Status", "Made from", "File"]


@dataclass(frozen=True)
class OutputRun:
    """One run of the outputs folder, as its record tells it."""
    files: RunFiles
    record: RunRecord | FinishingRecord

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def finishing(self) -> bool:
        """An upscale or interpolation of another video (framepack_core.finishing), not a generation."""
        return isinstance(self.record, FinishingRecord)

    @property
    def prompt(self) -> str:
        """The prompt; for a finishing run, what it did to which video (the list's Prompt column)."""
        record = self.record
        if isinstance(record, FinishingRecord):
            return f"{record.operation} x{(record.applied or {}).get('factor')} of {Path(record.source or '').name}"
        return record.settings.get("prompt") or ""

    @property
    def seconds(self) -> float | None:
        """Seconds of video made (frames / fps), else the length asked for."""
        if self.record.frames and self.record.fps:
            return round(self.record.frames / self.record.fps, 2)
        return None if self.finishing else self.record.settings.get("seconds")

    @property
    def date(self) -> str:
        return str(self.record.created or "").replace("T", " ")[:16]

    @property
    def video(self) -> Path | None:
        """The finished video, else the video so far of a run that stopped, failed or is going."""
        for path in (self.files.video, self.files.in_progress):
            if path.is_file():
                return path
        return None

    def row(self) -> list:
        length = "" if self.seconds is None else f"{self.seconds:g} s"
        return [self.name, self.prompt, length, self.status, self.date]

    def caption(self) -> str:
        return f"{self.status} · {self.row()[2]} · {self.date}"


def list_runs(folder: Path) -> list[OutputRun]:
    """The runs in `folder`, newest first; files that are not this app's run records are passed over."""
    runs = []
    for path in Path(folder).glob("*.json") if Path(folder).is_dir() else ():
        run = read_run(RunFiles(path.parent, path.stem))
        if run is not None:
            runs.append(run)
    return sorted(runs, key=lambda r: (r.record.created or "", r.name), reverse=True)


def read_run(files: RunFiles) -> OutputRun | None:
    """The run, or None (with one notice per file and version) when its record is not one the tab can show."""
    try:
        value = files.read_record()
    except NotARecord as error:
        return _passed_over(files, str(error))
    except (OSError, ValueError):  # gone meanwhile
        return None
    if not value:
        return None  # a name being claimed ("{}")
    try:
        return OutputRun(files, record_of(value))
    except NotARecord as error:
        return _passed_over(files, str(error))


_noticed: set[tuple] = set()  # (file, its size and time): each file that is passed over is told once


def _passed_over(files: RunFiles, why: str) -> None:
    try:
        stat = files.record.stat()
    except OSError:
        return None
    key = (str(files.record), stat.st_size, stat.st_mtime_ns)
    if key not in _noticed:
        _noticed.add(key)
        log.warning("Outputs: %s is passed over: %s.", files.record.name, why)
    return None


def folder_version(folder: Path) -> tuple:
    """Changes whenever a record is added, removed or rewritten: the tab redraws only then."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in Path(folder).glob("*.json")))
    except OSError:  # a record removed between listing and stat: next time
        return ()


class OutputsHandlers:
    """The Outputs tab's buttons; runs go through the page's Handlers (one worker, one run at a time)."""

    def __init__(self, handlers: Handlers):
        self.handlers = handlers

    @property
    def folder(self) -> Path:
        return self.handlers.settings.outputs

    def runs(self) -> list[OutputRun]:
        return list_runs(self.folder)

    def rows(self, runs: list[OutputRun] | None = None) -> list[list]:
        """The list's rows (COLUMNS) of `runs` (None: the folder's), the file name last: what a picked row acts on."""
        runs = self.runs() if runs is None else runs
        return [[title(run), run.row()[2], run.status, lineage(run.record), run.name] for run in runs] or \
            [[""] * len(COLUMNS)]

    def thumbnails(self, runs: list[OutputRun] | None = None) -> list[tuple[str, str]]:
        """(a frame of each run's own video, else its picture; its title and, unless finished, its status)."""
        return self.gallery(runs)[0]

    def gallery(self, runs: list[OutputRun] | None = None) -> tuple[list[tuple[str, str]], list[str]]:
        """The thumbnails, and the names of their runs in the same order (what a click on one picks)."""
        shown, names = [], []
        for run in self.runs() if runs is None else runs:
            picture = thumbnail(run, self.handlers.worker.scratch / "thumbnails")
            if picture is not None:
                shown.append((str(picture), title(run) + ("" if run.status == Status.FINISHED else f" ({run.status})")))
                names.append(run.name)
        return shown, names

    def find(self, name) -> OutputRun:
        """The run called `name` in the outputs folder; ValueError when there is none."""
        name = str(name or "").strip()
        if not name:
            raise ValueError("Pick a run in the list first.")
        files = RunFiles(self.folder, name)
        if Path(name).name != name or not files.record.is_file():
            raise ValueError(f"There is no run {name!r} in the outputs folder.")
        run = read_run(files)
        if run is None:
            raise ValueError(f"The record of {name!r} cannot be read.")
        return run

    def details(self, name) -> tuple[str | None, str]:
        """The picked run's video (or None) and its settings as markdown."""
        try:
            run = self.find(name)
        except ValueError as error:
            return None, str(error)
        if run.finishing:
            from .finish_page import summary

            return str(run.video) if run.video else None, f"{summary(run.record)}\n- source: `{run.record.source}`"
        made_from = lineage(run.record)
        heading = f"**{title(run)}**" + (f" · {made_from}" if made_from else "")
        try:
            summary = summary_markdown(run.record)
        except (KeyError, TypeError, ValueError, AttributeError):  # an older or hand-edited record lacks a field
            summary = f"**{run.name}** · {run.status}"
        return (str(run.video) if run.video else None, f"{heading}\n\n{summary}\n\n{settings_table(run.record)}")

    def actions(self, name) -> dict[str, bool]:
        """Which of the tab's buttons apply to run `name` (all off when there is no such run)."""
        try:
            run = self.find(name)
        except ValueError:
            return available(None)
        live = self.handlers.worker.busy and self.handlers.last_run is not None and \
            self.handlers.last_run.files == run.files
        return available(run, live)

    def sources(self, name) -> list[str]:
        """The runs of this folder that run `name`'s video continues (its lineage), by name."""
        try:
            record = self.find(name).record
        except ValueError:
            return []
        return [source for source in sources(record) if RunFiles(self.folder, source).record.is_file()]

    def remake_form(self, name) -> dict:
        """The Generate form's values (by FORM_FIELDS name) that make the picked run again.

        Settings the form has no field for are not carried over; the picture is the one the model saw."""
        run = self.find(name)
        if run.finishing:
            raise ValueError(f"{run.name} is an {run.prompt}; pick that run to make it again (its settings ask "
                             "for the same finishing).")
        continued = run.record.continued
        if continued:  # the Generate tab makes videos from a picture: it would make another video
            sources = " and ".join(continued)
            raise ValueError(f"{run.name} continues {sources}, which the Generate tab cannot; make it again with "
                             "Extend, Branch here or Bridge on that video.")
        fields = remake_fields(run.record.to_json())  # as from the JSON file: request.py reads records and MP4s alike
        # The page's settings (the settings table's with a widget) but the pictures and LoRAs, done below;
        # a setting left automatic (None) shows as its widget's "auto" value.
        form = {setting.name: fields.get(setting.name) for setting in PAGE_SETTINGS
                if setting.kind not in (SettingKind.PICTURE, SettingKind.LORAS) and (setting.name in fields or setting.optional)}
        form |= {setting.name: setting.widget.auto for setting in PAGE_SETTINGS
                 if setting.optional and setting.name in form and form[setting.name] is None}
        form |= {"image": str(run.files.picture) if run.files.picture.is_file() else None, "randomize": False,
                 "end_image": str(run.files.end_picture) if run.files.end_picture.is_file() else None,
                 "loras": self._lora_rows(fields.get("loras") or ()), "loop": bool(fields.get("loop", False))}
        keys = run.record.settings.get("keyframes") or []
        form["keyframes"] = [str(run.files.keyframe(n)) for n in range(1, len(keys) + 1)] or None
        form["keyframe_times"] = ", ".join(f"{k['seconds']:g}" + (f":{k['weight']:g}" if k["weight"] != 1 else "")
                                           for k in keys)
        return form

    def _lora_rows(self, chosen) -> list[list]:
        weights = {Path(path).name: weight for path, weight in chosen}
        rows = lora_rows(self.handlers.settings.lora_dir)
        missing = sorted(set(weights) - {row[0] for row in rows})
        if missing:
            raise ValueError(f"The LoRA file{'s' if len(missing) > 1 else ''} {', '.join(missing)} of this run "
                             f"{'are' if len(missing) > 1 else 'is'} not in the LoRA folder.")
        return [[row[0], weights.get(row[0], 0.0)] for row in rows]

    def resume(self, name, page: str = ""):
        """Resume pressed: the picked run, if it stopped, failed or was killed, from its last finished section
        (a finishing run after its last whole part)."""
        busy = self.handlers.busy_refusal()  # the machine's state first, as every button says it
        if busy is not None:
            yield busy
            return
        try:
            run = self.find(name)
            self._refuse_if_live(run)
            if run.status not in RESUMABLE:
                raise ValueError(f"{run.name} is {run.status}; only stopped, failed or killed runs can be resumed.")
        except ValueError as error:
            yield refused(str(error))
            return
        if run.finishing:
            from .finish_page import resume_finishing

            yield from resume_finishing(self.handlers, run.files.record)
            return
        yield from self.handlers.follow_start(partial(starts().Resume, run.files.record), page)

    def extend(self, name, seconds, prompt, page: str = ""):
        """Extend pressed: the picked run's finished video, `seconds` longer (a new run)."""
        yield from self._continue(name, seconds, prompt, page=page)

    def branch(self, name, at_seconds, seconds, prompt, page: str = ""):
        """Branch here pressed: the picked run's finished video kept up to about `at_seconds` (the player's
        time) and continued from there for `seconds` more, into a new run; the source stays as it is."""
        yield from self._continue(name, seconds, prompt, branching=True, from_seconds=at_seconds, page=page)

    def _continue(self, name, seconds, prompt, branching=False, from_seconds=None, page: str = ""):
        """Extend or branch the picked run's finished video, through the page's one extend path; one
        sentence on the Generate tab, and nothing written, when it cannot be done."""
        try:
            video = self.finished_video(name, "branch from" if branching else "extend")
            if branching and from_seconds is None:  # the browser found no player to read the time from
                raise ValueError("Show the picked run's video and seek it to the moment to branch from.")
        except ValueError as error:
            yield refused(str(error))
            return
        yield from self.handlers.page_extend(str(video), seconds, prompt, from_seconds=from_seconds, page=page)

    def bridge(self, name, into_name, seconds, prompt, page: str = ""):
        """Bridge pressed: the picked run's finished video, about `seconds` leading from its last frame into
        the finished video of run `into_name`, then that video, as a new run (bridge.py); both stay as they are."""
        try:
            first = self.finished_video(name, "bridge from")
            if not str(into_name or "").strip():
                raise ValueError("Choose the run to bridge into first.")
            second = self.finished_video(into_name, "bridge into")
        except ValueError as error:
            yield refused(str(error))
            return
        yield from self.handlers.page_bridge(str(first), str(second), seconds, prompt, page=page)

    def finished_video(self, name, use: str) -> Path:
        """The finished video of run `name`; ValueError naming `use` ("extend", ...) when it has none."""
        run = self.find(name)
        if run.status != Status.FINISHED or not run.files.video.is_file():
            raise ValueError(f"{run.name} has no finished video to {use}; resume it first.")
        return run.files.video

    def bridge_choices(self, picked=None) -> list[tuple[str, str]]:
        """The runs Bridge can lead into, as (label, name), newest first: with a run picked, the finished ones of
        its size but itself (a bridge joins clips of one size); none when it has no finished video."""
        runs = self.runs()
        first = next((run for run in runs if run.name == picked), None) if picked else None
        return [(f"{title(run)} · {run.name}", run.name) for run in runs
                if (bridgeable(first, run) if first is not None else
                    run.name != picked and run.status == Status.FINISHED and run.files.video.is_file())]

    def delete(self, name) -> str:
        """Delete the picked run's files (pictures, videos, latents, record) and nothing else."""
        run = self.find(name)
        self._refuse_if_live(run)
        files = run.files
        removed = 0
        # The record last: a run whose deletion is interrupted still shows, and can be deleted again. Its keyframe
        # pictures by their names' pattern, not by the record's word (which a hand-edited record could make huge).
        keys = [path for path in files.folder.glob(f"{_glob_escape(files.name)}.key*.png")
                if re.fullmatch(r"key[0-9]+\.png", path.name[len(files.name) + 1:])]
        for path in (files.video, files.in_progress, files.latents, files.picture, files.end_picture, *keys,
                     files.record):
            if path.is_file():
                path.unlink()
                removed += 1
        shutil.rmtree(files.folder / f".{files.name}.parts", ignore_errors=True)  # a finishing run's parts
        removed += _remove_finishing_kept(files)
        return f"Deleted {run.name} ({removed} file{'s' if removed != 1 else ''})."

    def _refuse_if_live(self, run: OutputRun) -> None:
        """Refuse a run this page is making, or one whose record names a process that still makes it (another
        page, `generate`, a queue runner; on another host: one whose files changed lately)."""
        live = self.handlers.last_run
        if live is not None and live.files == run.files and self.handlers.worker.busy:
            raise ValueError(f"{run.name} is being made right now; stop it first.")
        owner = live_owner(run.files, run.record)
        if owner is not None:
            raise ValueError(f"{run.name} is being made right now by {owner_words(owner)}; wait for it or stop it "
                             "there first.")


def _remove_finishing_kept(files: RunFiles) -> int:
    """A stopped generation's finishing parts made as it went, and their joined video (per_section.py)."""
    from framepack_core.finishing.per_section import so_far_video, staging_folder

    removed = 0
    for operation in ("upscale", "interpolate"):
        for factor in (2, 4):
            shutil.rmtree(staging_folder(files, operation, factor), ignore_errors=True)
            if so_far_video(files, operation, factor).is_file():
                so_far_video(files, operation, factor).unlink()
                removed += 1
    return removed
