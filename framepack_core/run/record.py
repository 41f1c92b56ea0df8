"""The records of the outputs folder, `NAME.json` beside each video: a generation's (RunRecord) and a finishing
run's (FinishingRecord), each one dataclass that its run writes and every reader reads, and the checks that tell
a record this version can read from anything else named `*.json` there.

    record = run.record()                          # a RunRecord: settings, status, outcome, where its video came from
    run.files.write_record(record.to_json())       # the JSON file (run/files.py writes it whole)
    record = record_of(run.files.read_record())    # either kind; files.read_any(path) does both
    record.status, record.frames, record.extends, ...

The JSON keeps the keys, their order and their omissions that records have always had. A generation's: the
start's part (`extends`; `branches` and `from_seconds`; `bridges`; `continues`) only for a run that continues a
video, `owner` only while it runs, `error` and `partial_video` only when it failed, the outcome's fields only when
it finished or stopped, `finishing` only when a finishing step was asked for. A finishing run's: `owner` while it
runs, `error` and `partial_video` when it failed, `seconds_elapsed` and `stopped` once it ended (then
`partial_video` when it stopped).

Version. Records carry no version key: VERSION 1 is every record this app has written, a shape grown by added
fields only, so it is told by the fields it has (a finishing run's by its `kind`). Older generation records lack
`stages`, `keyframe_pictures`, `continues` or `finishing` (read as empty), and the earliest name what was used
`attention`, `vae_tiling`, `fp8` instead of `*_used` (read into the `*_used` fields). A later change that is not
an addition writes `"version": 2`; this version passes such a record over (NotARecord) instead of misreading it.

The checks. The outputs folder is shared with the user, other programs and other copies of the app: a file named
`*.json` there may be anything (the queue's export, a hand-edited record, a record of an older version). A record
is read only when every field the readers use has the type the runs write; anything else is NotARecord, with one
sentence saying why (the reader's one notice), instead of an exception deep in a reader. The settings' types come
from the settings table, so a setting added there is checked here without an edit.

Nothing here reads a file or calls into another module of the app: the run's files (files.py) read and write the
JSON, these types give it a shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import ClassVar

from ..events import Status
from ..settings import SETTINGS, SETTINGS_LIST, SettingKind

APP = "FramePack desktop"
VERSION = 1  # the records' shape (module docstring): implied, never written
KIND = "finishing"  # a finishing run's record's `kind`: what tells it from a generation's
# {the record's name for what a run used: the names records gave it before (its setting's name and aliases)}
_USED_BEFORE = {s.used: (s.name, *s.aliases) for s in SETTINGS_LIST if s.used}
_STATUSES = {status.value: status for status in Status}
_OUTCOME = (Status.FINISHED, Status.STOPPED)  # the statuses whose records carry the outcome's fields


class NotARecord(ValueError):
    """A file named like a record that is not one: its sentence says why (for the one notice a reader gives)."""


_TEXT = (str, type(None))
_NUMBER = (int, float, type(None))
# A generation record's own fields (RunRecord) and what each may hold.
_FIELDS = {
    "app": (str,), "created": _TEXT, "model": _TEXT, "status": _TEXT, "input": _TEXT, "input_name": _TEXT,
    "end_frame": _TEXT, "video": _TEXT, "error": _TEXT, "partial_video": _TEXT,
    "frames": _NUMBER, "fps": _NUMBER, "sections": _NUMBER, "width": _NUMBER, "height": _NUMBER,
    "seed": _NUMBER, "seconds_elapsed": _NUMBER,
    "owner": (dict, type(None)), "step_cache": (dict, bool, type(None)), "stages": (list, type(None)),
    "keyframe_pictures": (list, type(None)), "extends": _TEXT, "branches": _TEXT, "from_seconds": _NUMBER,
    "bridges": (list, type(None)),
}
# A finishing run's own fields (FinishingRecord).
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
    if record.get("kind") == KIND:  # an upscale or interpolation: no settings of its own
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


def _fields_problem(record: dict, named: dict) -> str | None:
    for name, types in named.items():
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


@dataclass(frozen=True)
class StepCacheUse:
    """What the step cache did in a finished or stopped run (`enabled` only when none ran)."""
    enabled: bool
    method: str | None = None  # magcache | teacache | first-block
    threshold: float | None = None
    blocks_computed: int = 0  # transformer block evaluations that ran
    blocks_skipped: int = 0  # and those the cache skipped
    speedup: float | None = None  # (computed + skipped) / computed

    def to_json(self) -> dict:
        if not self.method:
            return {"enabled": self.enabled}
        return {"enabled": self.enabled, "method": self.method, "threshold": self.threshold,
                "blocks_computed": self.blocks_computed, "blocks_skipped": self.blocks_skipped,
                "speedup": self.speedup}

    @classmethod
    def from_json(cls, value: dict | bool | None) -> StepCacheUse | None:
        """A record's `step_cache` (records before its breakdown hold true/false)."""
        if value is None or isinstance(value, bool):
            return None if value is None else cls(enabled=value)
        return cls(enabled=value.get("enabled", False), method=value.get("method"), threshold=value.get("threshold"),
                   blocks_computed=value.get("blocks_computed", 0), blocks_skipped=value.get("blocks_skipped", 0),
                   speedup=value.get("speedup"))


@dataclass(frozen=True)
class RunRecord:
    """A generation's record (to_json gives the JSON's order; what every record has comes first here)."""
    VERSION: ClassVar[int] = VERSION

    settings: dict  # Request.settings(): every setting by its flat name (the settings table's)
    status: Status | str  # a status of events.Status (a later version's word is kept as it is; none: "")
    app: str = APP
    created: str | None = None  # "2026-12-07T10:11:12", local time
    model: str | None = None  # the model set's name
    input: str | None = None  # the picture as the model saw it (NAME.png), by name
    input_name: str | None = None  # the picture's own file name, as the user gave it
    end_frame: str | None = None  # NAME.end.png, or None without an end frame
    keyframe_pictures: tuple[str, ...] = ()  # NAME.key1.png ..., in time order
    video: str | None = None  # NAME.mp4 once there is one to show; None when it failed
    # The start's part: where the video comes from, in its kind's own words (Origin.described: {"extends": name},
    # {"branches": name, "from_seconds": s}, {"bridges": [a, b]}, a new kind's own; {} for a picture), and what
    # makes it again from the same start when killed before its first latents (Origin.restarts).
    start: dict = field(default_factory=dict)
    continues: dict | None = None
    owner: dict | None = None  # the process making it (owner.py), only while it runs
    # Failed:
    error: str | None = None  # one sentence for the user
    partial_video: str | None = None  # NAME.in-progress.mp4 when some of the video was made
    # Finished or stopped (the outcome):
    frames: int | None = None
    fps: float | None = None
    sections: int | None = None  # sections done
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    seconds_elapsed: float | None = None
    stopped: bool | None = None
    attention_used: str | None = None  # what ran (the settings say what was asked for): the kernel,
    vae_tiling_used: bool | None = None  # whether the VAE decoded in tiles,
    fp8_used: str | None = None  # the FP8 mode
    step_cache: StepCacheUse | None = None
    finishing: tuple[dict, ...] = ()  # the finishing steps asked for with the run, as applied (after_run.py)
    stages: tuple[dict, ...] = ()  # what each stage cost (memory/usage.py's StageUsage fields)
    interrupted: bool = False  # its process was gone before the run ended (files.interrupted marks the JSON)

    def to_json(self) -> dict:
        """The record as the JSON file holds it: the same keys in the same order as records have always had."""
        out = {"app": self.app, "created": self.created, "model": self.model, "input": self.input,
               "input_name": self.input_name, "end_frame": self.end_frame,
               "keyframe_pictures": list(self.keyframe_pictures), "video": self.video, "settings": self.settings,
               "status": self.status} | self.start | ({"continues": self.continues} if self.continues else {})
        if self.owner is not None:
            out["owner"] = self.owner
        if self.status == Status.FAILED:
            out |= {"error": self.error, "partial_video": self.partial_video}
        elif self.status in _OUTCOME:
            out |= {"frames": self.frames, "fps": self.fps, "sections": self.sections, "width": self.width,
                    "height": self.height, "seed": self.seed, "seconds_elapsed": self.seconds_elapsed,
                    "stopped": self.stopped, "attention_used": self.attention_used,
                    "vae_tiling_used": self.vae_tiling_used, "fp8_used": self.fp8_used,
                    "step_cache": None if self.step_cache is None else self.step_cache.to_json()}
        if self.finishing:
            out["finishing"] = list(self.finishing)
        out["stages"] = list(self.stages)
        return out | ({"interrupted": True} if self.interrupted else {})

    @staticmethod
    def start_fields(described: dict, restarts: dict | None = None) -> dict:
        """The start's part as fields, from what an origin says of it (`described`, `restarts`) or from a record's
        JSON (every key that is not one of the record's own)."""
        return {"start": {key: value for key, value in described.items() if key not in _OWN_KEYS},
                "continues": restarts or None}

    @property
    def extends(self) -> str | None:  # the video it extends, by name
        return self.start.get("extends")

    @property
    def branches(self) -> str | None:  # the video it branches, by name, ...
        return self.start.get("branches")

    @property
    def from_seconds(self) -> float | None:  # ... at about this time of it
        return self.start.get("from_seconds")

    @property
    def bridges(self) -> tuple[str, str] | None:  # the two clips it bridges, by name
        return tuple(self.start["bridges"]) if self.start.get("bridges") else None

    @property
    def continued(self) -> tuple[str, ...]:
        """The videos (by name) this run's video continues: the one it extends or branches, the two it bridges."""
        named = self.extends or self.branches or self.bridges or ()
        return (named,) if isinstance(named, str) else tuple(named)

    @classmethod
    def from_json(cls, value) -> RunRecord:
        """The record a JSON value holds. NotARecord, its sentence saying why, when it is not a generation's
        record this version can read."""
        _check(value, finishing=False)
        special = {"status", "keyframe_pictures", "step_cache", "finishing", "stages", "interrupted", *_USED_BEFORE,
                   "start", "continues"}
        plain = {f.name: value.get(f.name) for f in fields(cls) if f.name not in special}  # absent: None
        return cls(**plain, **_used(value), **cls.start_fields(value, value.get("continues")),
                   status=_status(value),
                   keyframe_pictures=tuple(value.get("keyframe_pictures") or ()),
                   step_cache=StepCacheUse.from_json(value.get("step_cache")),
                   finishing=tuple(_list(value.get("finishing"))), stages=tuple(value.get("stages") or ()),
                   interrupted=value.get("interrupted") is True)


# A record's own keys (today's and older names); any other key of a generation's record is its start's part.
_OWN_KEYS = {f.name for f in fields(RunRecord)} - {"start"} | {name for names in _USED_BEFORE.values()
                                                                 for name in names} | {"version"}


@dataclass(frozen=True)
class FinishingRecord:
    """A finishing run's record (to_json gives the JSON's order)."""
    status: Status | str
    operation: str | None = None  # upscale | interpolate
    source: str | None = None  # the video it finishes (its path)
    source_sha256: str | None = None  # that video's bytes when the run began (a resume checks them)
    source_frames: int | None = None
    request: dict | None = None  # FinishRequest.fields(): what a resume asks again
    applied: dict | None = None  # what it applies: operation, factor, method, model file and its SHA-256
    video: str | None = None  # NAME.mp4, None until finished
    frames: int | None = None  # what the made video has (or will have)
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    parts: int | None = None  # parts the frames are made in
    parts_done: int | None = None
    app: str = APP
    created: str | None = None
    owner: dict | None = None  # the process making it (owner.py), only while it runs
    error: str | None = None  # failed: one sentence for the user
    partial_video: str | None = None  # failed or stopped: the video so far
    seconds_elapsed: float | None = None  # ended
    stopped: bool | None = None
    interrupted: bool = False  # its process was gone before the run ended (files.interrupted marks the JSON)

    @property
    def continued(self) -> tuple[str, ...]:
        """The video (by name) this run finishes."""
        return (Path(self.source).name,) if self.source else ()

    def to_json(self) -> dict:
        out = {"app": self.app, "kind": KIND, "created": self.created, "operation": self.operation,
               "source": self.source, "source_sha256": self.source_sha256, "source_frames": self.source_frames,
               "request": self.request, "applied": self.applied, "video": self.video, "frames": self.frames,
               "fps": self.fps, "width": self.width, "height": self.height, "parts": self.parts,
               "parts_done": self.parts_done, "status": self.status}
        if self.owner is not None:
            out["owner"] = self.owner
        if self.status == Status.FAILED:
            out |= {"error": self.error, "partial_video": self.partial_video}
        elif self.status in (Status.FINISHED, Status.STOPPED):
            out |= {"seconds_elapsed": self.seconds_elapsed, "stopped": self.stopped}
            if self.status == Status.STOPPED:
                out["partial_video"] = self.partial_video
        return out | ({"interrupted": True} if self.interrupted else {})

    @classmethod
    def from_json(cls, value) -> FinishingRecord:
        """The record a JSON value holds. NotARecord, its sentence saying why, when it is not a finishing run's
        record this version can read."""
        _check(value, finishing=True)
        plain = {f.name: value.get(f.name) for f in fields(cls) if f.name not in ("status", "interrupted")}
        return cls(**plain, status=_status(value), interrupted=value.get("interrupted") is True)


def record_of(value) -> RunRecord | FinishingRecord:
    """The record a JSON value of the outputs folder holds, of either kind; NotARecord when it is neither."""
    if isinstance(value, dict) and value.get("kind") == KIND:
        return FinishingRecord.from_json(value)
    return RunRecord.from_json(value)


def _check(value, finishing: bool) -> None:
    """NotARecord unless `value` passes the checks above, is of the kind asked for and of no later version."""
    problem = record_problem(value)
    if problem is None and (value.get("kind") == KIND) != finishing:
        problem = ("it is not the record of an upscale or interpolation" if finishing else
                   "it is the record of an upscale or interpolation, not of a generation")
    version = value.get("version", VERSION) if problem is None else VERSION
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        problem = f"it is a record of a later version ({version})"
    if problem is not None:
        raise NotARecord(problem)


def _status(value: dict) -> Status | str:
    """A record's status: one of events.Status, else its word as it is (a later version's); "" when it has none."""
    status = value.get("status") or ""
    return _STATUSES.get(status, status)


def _list(value) -> list:
    """A list the checks leave alone (record_problem does not look into `finishing`): [] unless it is one."""
    return value if isinstance(value, list) else []


def _used(value: dict) -> dict:
    """What was used, by today's `*_used` names, from a record of any age (its first name that is there)."""
    return {used: next((value[name] for name in (used, *before) if name in value), None)
            for used, before in _USED_BEFORE.items()}
