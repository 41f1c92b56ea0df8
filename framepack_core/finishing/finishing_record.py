"""A finishing run's record (`NAME.json` beside its upscaled or interpolated video), written and read as one
dataclass, like a generation's (run/record.py); `read_any` reads either kind from the outputs folder.

Its JSON keeps the keys, order and omissions its records have always had: `owner` only while it runs, `error` and
`partial_video` when it failed, `seconds_elapsed` and `stopped` once it ended (and `partial_video` after them when
it stopped). Its version is a generation record's (RunRecord.VERSION): none written, told by the `kind` key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..events import Status
from ..run.files import NotARecord, RunFiles, files_of
from ..run.record import APP, RunRecord, status_of
from ..run.record_shape import record_problem

KIND = "finishing"  # the JSON's `kind`: what tells a finishing run's record from a generation's


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
    owner: dict | None = None  # the process making it (run/owner.py), only while it runs
    error: str | None = None  # failed: one sentence for the user
    partial_video: str | None = None  # failed or stopped: the video so far
    seconds_elapsed: float | None = None  # ended
    stopped: bool | None = None
    interrupted: bool = False  # its process was gone before the run ended (run/files.interrupted marks the JSON)

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
        """NotARecord, its sentence saying why, when `value` is not a finishing run's record this version reads."""
        problem = record_problem(value)
        if problem is None and value.get("kind") != KIND:
            problem = "it is not the record of an upscale or interpolation"
        if problem is not None:
            raise NotARecord(problem)
        plain = ("operation", "source", "source_sha256", "source_frames", "request", "applied", "video", "frames",
                 "fps", "width", "height", "parts", "parts_done", "app", "created", "owner", "error", "partial_video",
                 "seconds_elapsed", "stopped")
        return cls(status=status_of(value), interrupted=value.get("interrupted") is True,
                   **{name: value.get(name) for name in plain})


def record_of(value) -> RunRecord | FinishingRecord:
    """The record a JSON value of the outputs folder holds, of either kind; NotARecord when it is neither."""
    if isinstance(value, dict) and value.get("kind") == KIND:
        return FinishingRecord.from_json(value)
    return RunRecord.from_json(value)


def read_any(path: Path | str | RunFiles) -> RunRecord | FinishingRecord:
    """The record of the run (a generation or a finishing run) that `path` belongs to, a killed run's marked
    failed first. OSError when it cannot be read, NotARecord (a ValueError) when it is no run's record."""
    files = path if isinstance(path, RunFiles) else files_of(Path(path))
    return record_of(files.read_record())
