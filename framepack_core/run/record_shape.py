"""Whether a JSON object in the outputs folder is a run's record that the readers can use.

The outputs folder is shared with the user, other programs and other copies of the app: a file named
`*.json` there may be anything (the queue's export, a hand-edited record, a record of an older
version). The readers (the Outputs tab, the page's Resume, `--outputs` at start) take a record only
when every field they read has the type the run writes (run.py); anything else is passed over
with one notice saying why, instead of an exception deep in a reader. The settings' types come
from the settings table, so a setting added there is checked here without an edit.
"""
from __future__ import annotations

from numbers import Real

from ..settings import SETTINGS, SettingKind

_TEXT = (str, type(None))
_NUMBER = (int, float, type(None))
# The record's own fields (run.py's Run.record) and what each may hold.
_FIELDS = {
    "app": (str,), "created": _TEXT, "model": _TEXT, "status": _TEXT, "input": _TEXT, "input_name": _TEXT,
    "end_frame": _TEXT, "video": _TEXT, "error": _TEXT, "partial_video": _TEXT,
    "frames": _NUMBER, "fps": _NUMBER, "sections": _NUMBER, "width": _NUMBER, "height": _NUMBER,
    "seed": _NUMBER, "seconds_elapsed": _NUMBER,
    "owner": (dict, type(None)), "step_cache": (dict, bool, type(None)), "stages": (list, type(None)),
    "keyframe_pictures": (list, type(None)), "extends": _TEXT, "branches": _TEXT, "from_seconds": _NUMBER,
    "bridges": (list, type(None)),
}
# A finishing run's own fields (framepack_core/finishing/finishing_run.py's record).
_FINISHING = {"operation": _TEXT, "source": _TEXT, "source_sha256": _TEXT, "request": (dict,), "applied": (dict,),
              "parts": _NUMBER, "parts_done": _NUMBER}
# The settings' kinds (settings.py) and what a record may hold for each (None: left to the model or memory;
# a choice may be an older record's true/false, which validation reads as today's words; a record says of its
# end picture only whether there was one).
_KINDS = {
    SettingKind.INT: _NUMBER, SettingKind.FLOAT: _NUMBER, SettingKind.BOOL: (bool, type(None)),
    SettingKind.TEXT: _TEXT, SettingKind.CHOICE: (str, bool, type(None)), SettingKind.PATH: _TEXT,
    SettingKind.PICTURE: (str, bool, type(None)), SettingKind.LORAS: (list, type(None)),
    SettingKind.KEYFRAMES: (list, type(None)),
}


def record_problem(record) -> str | None:
    """None for a record the readers can use; else why not, in a few words (for the reader's notice)."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    if record.get("kind") == "finishing":  # an upscale or interpolation: no settings of its own
        return _fields_problem(record, _FIELDS | _FINISHING) or (
            None if isinstance(record.get("app"), str) else "it is not a run's record (no app)")
    if "app" not in record or not isinstance(record.get("settings"), dict):
        return "it is not a run's record (no app and settings)"
    problem = _fields_problem(record, _FIELDS)
    if problem is not None:
        return problem
    problem = settings_problem(record["settings"])
    if problem is not None:
        return problem
    for name in ("keyframe_pictures", "bridges"):
        if not all(isinstance(item, str) for item in record.get(name) or ()):
            return f"its {name!r} are not file names"
    if not all(isinstance(stage, dict) for stage in record.get("stages") or ()):
        return "its 'stages' are not stage records"
    return None


def _fields_problem(record: dict, fields: dict) -> str | None:
    for name, types in fields.items():
        if name in record and not _is(record[name], types):
            return f"its {name!r} is a {type(record[name]).__name__}"
    return None


def settings_problem(settings) -> str | None:
    """None for flat settings (a record's, a queued job's) of the settings table's types; else why not."""
    if not isinstance(settings, dict):
        return "its settings are not a JSON object"
    bad = next((name for name, value in settings.items() if not _setting_fits(name, value)), None)
    return None if bad is None else f"its setting {bad!r} is a {type(settings[bad]).__name__}"


def _setting_fits(name: str, value) -> bool:
    setting = SETTINGS.get(name)
    if setting is None or setting.kind not in _KINDS:
        return True  # not one of today's settings (an older or a later version's): no reader uses it
    if setting.kind == SettingKind.KEYFRAMES and isinstance(value, list):
        return all(isinstance(key, dict) and _is(key.get("seconds"), (Real,)) and _is(key.get("weight"), (Real,))
                   and isinstance(key.get("picture", ""), str) for key in value)
    if setting.kind == SettingKind.LORAS and isinstance(value, list):  # [[file, weight], ...]
        return all(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                   and _is(item[1], (Real,)) for item in value)
    return _is(value, _KINDS[setting.kind])


def _is(value, types: tuple) -> bool:
    # JSON's true/false are ints to Python: a number field holding true is as wrong as one holding "10".
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
