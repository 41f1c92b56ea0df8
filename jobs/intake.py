"""Jobs in: from the page's form, command-line flags, JSON Lines or CSV files, and folders of pictures.

Each job is validated by the request's own validator when it is added, so a bad one is refused
with its sentence (and, from a file, its line number) instead of failing hours later. The
pictures are copied under the outputs folder: the queue must not depend on a file that may be
moved or an upload that gradio deletes. LoRA references (whatever settings name files) are kept
as given, by path.
"""
from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

from framepack_core.request import Request
from framepack_core.settings import SETTINGS_LIST, Part, Scope, SettingKind

from .store import JobStore

INPUTS = "queue-inputs"  # under the outputs folder
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Where a run goes is the queue's business (its outputs folder, one claimed name per job): by name or flag.
_NOT_PER_JOB = {name for s in SETTINGS_LIST if s.part is Part.OUTPUT and s.scope is Scope.RUN
                for name in (s.name, s.dest)}
# Settings that stay text when read from a CSV cell; every other cell is read as JSON (2, 1.5, true, null).
_TEXT = {name for s in SETTINGS_LIST if s.kind in (SettingKind.TEXT, SettingKind.CHOICE, SettingKind.PICTURE)
         for name in (s.name, *s.aliases)}


def add_job(store: JobStore, values: dict, base: Path | None = None, allowed: list[Path] | None = None) -> int:
    """Validate one job's settings (flat names, as `generate` or the page speak) and queue it.

    Raises ValueError with one sentence. Relative picture paths are taken from `base`. `allowed`: the only
    folders its pictures may come from (a file's rows name paths the user did not type; None: any).
    """
    settings, label = job_settings(store.outputs, values, base, allowed)
    return store.add(settings, label)


def job_settings(outputs: Path, values: dict, base: Path | None = None,
                 allowed: list[Path] | None = None) -> tuple[dict, str]:
    values = {k: v for k, v in values.items() if k not in _NOT_PER_JOB}
    for name in ("image", "end_image"):
        if isinstance(values.get(name), str) and values[name].strip() and base is not None:
            values[name] = str(base / values[name]) if not Path(values[name]).is_absolute() else values[name]
        if values.get(name) in ("", None, False):
            values.pop(name, None)
    if "image" not in values:
        raise ValueError("Please give a picture (image).")
    if base is not None and values.get("keyframes"):
        values["keyframes"] = [_keyframe_under(base, key) for key in values["keyframes"]]
    if allowed is not None:
        for what, picture in _pictures_named(values):
            _check_inside(what, picture, allowed, base)
    request = Request.from_fields(**values).validated()
    settings = request.settings()
    settings["image"] = _keep_picture(outputs, request.image)
    settings["end_image"] = _keep_picture(outputs, request.end_image) if request.end_image is not None else None
    settings["image_name"] = request.image_name
    settings["keyframes"] = [{"picture": _keep_picture(outputs, picture), "seconds": seconds, "weight": weight}
                             for picture, seconds, weight in request.keyframes]
    return settings, request.image_name


def job_request(settings: dict, outputs: Path, **overrides) -> Request:
    """The job's request again (pictures from their copies), for the run path."""
    values = dict(settings) | overrides
    for name in ("image", "end_image"):
        if values.get(name):
            values[name] = str(Path(outputs) / values[name])
        else:
            values.pop(name, None)
    values["keyframes"] = [key | {"picture": str(Path(outputs) / key["picture"])} for key in values.get("keyframes") or ()]
    return Request.from_fields(**values)


def read_rows(text: str, name: str = "") -> list[tuple[int, dict | str]]:
    """Rows of a JSON Lines or CSV file as (line number, settings) or (line number, what is wrong).

    JSON Lines: one object a line. CSV: a header of setting names, one job a row; an empty cell
    keeps the default. A JSON list (the page's export) is read as one job per element.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            return [(error.lineno, f"not valid JSON ({error.msg})")]
        return [(i + 1, item if isinstance(item, dict) else "not a JSON object") for i, item in enumerate(items)]
    if name.lower().endswith((".jsonl", ".json", ".ndjson")) or stripped.startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                rows.append((number, f"not valid JSON ({error.msg})"))
                continue
            rows.append((number, item if isinstance(item, dict) else "not a JSON object"))
        return rows
    rows = []
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        number = reader.line_num
        if None in row:
            rows.append((number, "more cells than the header names"))
            continue
        try:
            rows.append((number, {k.strip(): _cell(k.strip(), v) for k, v in row.items() if v not in ("", None)}))
        except ValueError as error:
            rows.append((number, str(error)))
    return rows


def import_file(store: JobStore, path: str | Path,
                allowed: list[Path] | None = None) -> tuple[list[int], list[tuple[int, str]]]:
    """Queue every good row of a file; the bad ones come back as (line, message), the good ones stay queued.
    `allowed`: the folders its rows' pictures may come from (the front end's: the user named them)."""
    path = Path(path)
    added, errors = [], []
    for number, row in read_rows(path.read_text(encoding="utf-8-sig"), path.name):
        if isinstance(row, str):
            errors.append((number, row))
            continue
        try:
            added.append(add_job(store, row, base=path.parent, allowed=allowed))
        except (ValueError, TypeError) as error:
            errors.append((number, str(error)))
    return added, errors


def add_folder(store: JobStore, folder: str | Path, values: dict) -> tuple[list[int], list[tuple[str, str]]]:
    """One job per picture in `folder` (sorted by name), all with the same settings."""
    added, errors = [], []
    for picture in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PICTURE_SUFFIXES):
        try:
            added.append(add_job(store, values | {"image": str(picture)}))
        except ValueError as error:
            errors.append((picture.name, str(error)))
    return added, errors


def export_jobs(store: JobStore, ids: list[int] | None = None) -> list[dict]:
    """The queue's jobs as settings (pictures as absolute paths), ready for `import`."""
    out = []
    for job in store.jobs():
        if ids is None or job.id in ids:
            settings = dict(job.settings)
            for name in ("image", "end_image"):
                if settings.get(name):
                    settings[name] = str((store.outputs / settings[name]).resolve())
            settings["keyframes"] = [key | {"picture": str((store.outputs / key["picture"]).resolve())}
                                     for key in settings.get("keyframes") or ()]
            out.append(settings)
    return out


def _keep_picture(outputs: Path, picture) -> str:
    """The picture as the validator opened it, saved losslessly under the outputs folder; its relative path."""
    folder = Path(outputs) / INPUTS
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex[:12]}.png"
    picture.save(folder / name)
    return f"{INPUTS}/{name}"


def _pictures_named(values: dict):
    """(what, path) of every picture a job's values name: its start and end pictures and its keyframes', in
    each form a row may give a keyframe (PATH@SECONDS text, a [path, seconds] list, a {"picture": ...} object)."""
    for name, what in (("image", "image"), ("end_image", "end_image")):
        if values.get(name) is not None:
            yield what, values[name]
    for key in values.get("keyframes") or ():
        if isinstance(key, str):
            yield "keyframe", key.rpartition("@")[0] or key
        elif isinstance(key, dict):
            yield "keyframe", key.get("picture")
        elif isinstance(key, (list, tuple)) and key:
            yield "keyframe", key[0]


def _check_inside(what: str, picture, allowed: list[Path], base: Path | None) -> None:
    """A picture file inside one of the `allowed` folders (links followed), else ValueError. Missing and not
    allowed get the same sentence: an import tells nothing of files outside those folders."""
    inside = False
    try:
        path = Path(picture) if isinstance(picture, (str, Path)) else None
        if path is not None:
            path = ((base / path) if base is not None and not path.is_absolute() else path).resolve()
            inside = any(path.is_relative_to(Path(folder).resolve()) for folder in allowed) and path.is_file()
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, a link loop
        inside = False
    if not inside:
        folders = ", ".join(str(Path(folder)) for folder in allowed)
        raise ValueError(f"{what} {str(picture)[:200]!r} is not a picture file in the folders an import may read "
                         f"({folders}); name its folder with --allow-folder.")


def _keyframe_under(base: Path, key):
    """A keyframe's "PATH@SECONDS[:WEIGHT]" with a relative PATH taken from `base`."""
    if not isinstance(key, str) or "@" not in key:
        return key
    path, _, when = key.rpartition("@")
    return f"{base / path if not Path(path).is_absolute() else path}@{when}"


def _cell(name: str, value: str):
    if name in _TEXT:
        return value
    if name == "keyframes" and not value.lstrip().startswith("["):  # "a.png@1.2; b.png@3:0.5"
        return [key.strip() for key in value.split(";") if key.strip()]
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{name} = {value!r} is not a value (a number, true/false or null).") from None
