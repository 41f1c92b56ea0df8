"""A generation's record, `NAME.json` beside its video: one dataclass that the run writes and every reader reads.

    record = run.record()                  # a RunRecord: settings, status, outcome, where its video came from
    run.files.write_record(record)         # the JSON file (record.to_json(), two-space indented)
    record = RunRecord.read(path)          # any file of the run; a killed run's record is marked failed first
    record.status, record.frames, record.extends, ...

The JSON keeps the keys, their order and their omissions that records have always had: the start's part
(`extends`; `branches` and `from_seconds`; `bridges`; `continues`) only for a run that continues a video,
`owner` only while it runs, `error` and `partial_video` only when it failed, the outcome's fields only when it
finished or stopped, `finishing` only when a finishing step was asked for. A finishing run's own record is
framepack_core/finishing/finishing_record.py's.

Version. Records carry no version key: VERSION 1 is every record this app has written, a shape grown by added
fields only, so it is told by the fields it has. Older records lack `stages`, `keyframe_pictures`, `continues`
or `finishing` (read as empty), and the earliest name what was used `attention`, `vae_tiling`, `fp8` instead of
`*_used` (read into the `*_used` fields). A later change that is not an addition writes `"version": 2`; this
version passes such a record over (NotARecord) instead of misreading it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from ..events import Status
from ..settings import SETTINGS_LIST
from .files import NotARecord, RunFiles, files_of
from .record_shape import record_problem

APP = "FramePack desktop"
# {the record's name for what a run used: the names records gave it before (its setting's name and aliases)}
_USED_BEFORE = {s.used: (s.name, *s.aliases) for s in SETTINGS_LIST if s.used}
_STATUSES = {status.value: status for status in Status}
_OUTCOME = (Status.FINISHED, Status.STOPPED)  # the statuses whose records carry the outcome's fields


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
    VERSION: ClassVar[int] = 1

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
    # The start's part: where the video comes from (origins' `described` and `restarts`; empty for a picture).
    extends: str | None = None  # the video it extends, by name
    branches: str | None = None  # the video it branches, by name, ...
    from_seconds: float | None = None  # ... at about this time of it
    bridges: tuple[str, str] | None = None  # the two clips it bridges, by name
    continues: dict | None = None  # what makes it again from the same start when killed before its first latents
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
               "status": self.status} | self._start_json()
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

    def _start_json(self) -> dict:
        out = {}
        if self.extends is not None:
            out["extends"] = self.extends
        if self.branches is not None:
            out |= {"branches": self.branches, "from_seconds": self.from_seconds}
        if self.bridges is not None:
            out["bridges"] = list(self.bridges)
        return out | ({"continues": self.continues} if self.continues else {})

    @staticmethod
    def start_fields(described: dict, restarts: dict | None = None) -> dict:
        """The start's part as fields, from what an origin says of it (origins' `described`, `restarts`) or
        from a record's JSON: {"extends": ...} | {"branches": ..., "from_seconds": ...} | {"bridges": [a, b]}."""
        bridges = described.get("bridges")
        return {"extends": described.get("extends"), "branches": described.get("branches"),
                "from_seconds": described.get("from_seconds"), "bridges": tuple(bridges) if bridges else None,
                "continues": restarts or None}

    @property
    def continued(self) -> tuple[str, ...]:
        """The videos (by name) this run's video continues: the one it extends or branches, the two it bridges."""
        named = self.extends or self.branches or self.bridges or ()
        return (named,) if isinstance(named, str) else tuple(named)

    @classmethod
    def from_json(cls, value) -> RunRecord:
        """The record a JSON value holds. NotARecord, its sentence saying why, when it is not a generation's
        record this version can read (record_shape.py's checks, then the version)."""
        problem = record_problem(value)
        if problem is None and value.get("kind") == "finishing":
            problem = "it is the record of an upscale or interpolation, not of a generation"
        version = value.get("version", cls.VERSION) if problem is None else cls.VERSION
        if problem is None and isinstance(version, int) and not isinstance(version, bool) and version > cls.VERSION:
            problem = f"it is a record of a later version ({version})"
        if problem is not None:
            raise NotARecord(problem)
        special = {"status", "keyframe_pictures", "step_cache", "finishing", "stages", "interrupted", *_USED_BEFORE,
                   *cls.start_fields({})}
        plain = {f.name: value.get(f.name) for f in fields(cls) if f.name not in special}  # absent: None
        return cls(**plain, **_used(value), **cls.start_fields(value, value.get("continues")),
                   status=status_of(value),
                   keyframe_pictures=tuple(value.get("keyframe_pictures") or ()),
                   step_cache=StepCacheUse.from_json(value.get("step_cache")),
                   finishing=tuple(_list(value.get("finishing"))), stages=tuple(value.get("stages") or ()),
                   interrupted=value.get("interrupted") is True)

    @classmethod
    def read(cls, path: Path | str | RunFiles) -> RunRecord:
        """The record of the run `path` (its JSON, MP4, in-progress MP4, latents or picture) belongs to; a record
        whose process is gone is marked failed (and written back) first. OSError when it cannot be read,
        NotARecord (a ValueError) when it is not a generation's record."""
        files = path if isinstance(path, RunFiles) else files_of(Path(path))
        return cls.from_json(files.read_record())


def status_of(value: dict) -> Status | str:
    """A record's status: one of events.Status, else its word as it is (a later version's); "" when it has none."""
    status = value.get("status") or ""
    return _STATUSES.get(status, status)


def _list(value) -> list:
    """A list the checks leave alone (record_shape.py does not look into `finishing`): [] unless it is one."""
    return value if isinstance(value, list) else []


def _used(value: dict) -> dict:
    """What was used, by today's `*_used` names, from a record of any age (its first name that is there)."""
    return {used: next((value[name] for name in (used, *before) if name in value), None)
            for used, before in _USED_BEFORE.items()}
