"""A finishing run: a made video upscaled or interpolated into a new one, as a run like the others.

    run = FinishingRun.start(FinishRequest(...))   # validated, model loaded, names claimed, first record
    outcome = run.execute(None, emit)               # events as a generation's: Stage, Step, SectionDone, ...
    run.stop()                                      # from any thread: ends after the current frame
    FinishingRun.resume(path)                       # a stopped, failed or killed one, from its last whole part

Its files are a run's (run/files.RunFiles): `NAME.json` (the record, with its owner while it runs, marked
failed when read after its process is gone), `NAME.in-progress.mp4` (the parts so far, joined) and `NAME.mp4`,
written only when the whole video is done. The parts live in `.NAME.parts/` until then. The source is only read.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable

from framepack_core.events import Event, Failed, Finished, SectionDone, Stage, StageName, Status, Step
from framepack_core.failures import Cancelled, disk_message, user_message
from framepack_core.run.files import RunFiles, claim_files, files_of, read_any
from framepack_core.run.owner import this_process
from framepack_core.run.record import FinishingRecord

from . import frames as streams
from .request import FinishRequest, check_disk

log = logging.getLogger(__name__)


class FinishingRun:
    def __init__(self, request: FinishRequest, facts, files: RunFiles, method, created: str | None = None):
        self.request, self.facts, self.files, self.method = request, facts, files, method
        self.cancel = threading.Event()
        self.created = created or time.strftime("%Y-%m-%dT%H:%M:%S")
        self.outcome: Finished | Failed | None = None
        self.parts_done = 0
        self.source_sha256: str | None = None  # what a resume checks the source against

    @property
    def parts(self) -> Path:
        return self.files.folder / f".{self.files.name}.parts"

    @property
    def parts_total(self) -> int:
        if self.method is None:  # minterpolate: one part
            return 1
        return max(1, self.facts.frames // self.request.part_frames)  # the last part takes the rest: never a
        # part of one frame, which the concat demuxer cannot place

    @classmethod
    def start(cls, request: FinishRequest, device: str = "cpu", budget_bytes: int | None = None,
              say: Callable[[str], None] = lambda line: None) -> FinishingRun:
        """Raises ValueError (one sentence) before anything is written."""
        from .methods import make_method

        request, facts = request.validated()
        method = make_method(request, device, budget_bytes, say)
        width, height, count = _result_shape(method, request, facts)
        folder = request.output.parent if request.output else request.folder
        check_disk(folder, request.source, facts, width, height, count)
        try:
            suffix = "upscaled" if request.operation == "upscale" else "interpolated"
            files = claim_files(request.folder, 0, request.output, stem=f"{request.source.stem}.{suffix}-x{request.factor}")
            run = cls(request, facts, files, method)
            run.parts.mkdir(exist_ok=True)
            files.write_record(run.record().to_json())
        except OSError as error:
            raise ValueError(disk_message(error, folder) or f"Could not write to {folder}: {error}") from None
        return run

    @classmethod
    def resume(cls, path, device: str = "cpu", budget_bytes: int | None = None,
               say: Callable[[str], None] = lambda line: None) -> FinishingRun:
        """The finishing run `path` (its record, MP4 or in-progress MP4) belongs to, continued after its last
        whole part. ValueError when there is none to continue."""
        from .methods import make_method

        files = files_of(Path(path))
        try:
            record = read_any(files)
        except (OSError, ValueError):
            raise ValueError(f"{Path(path).name} belongs to no finishing run (no readable record).") from None
        if not isinstance(record, FinishingRecord):
            raise ValueError(f"{files.record.name} is not the record of an upscale or interpolation; resume it with "
                             f"python app.py generate --resume {files.record}")
        if record.status == Status.FINISHED:
            raise ValueError(f"{files.video.name} is finished already; nothing to resume.")
        request, facts = FinishRequest.from_fields(record.request).validated()
        if record.source_sha256 not in (None, _sha256(request.source)):
            raise ValueError(f"{request.source.name} has changed since this run began; its parts would not match. "
                             f"Start a new {request.operation} instead.")
        method = make_method(request, device, budget_bytes, say)
        run = cls(request, facts, files, method, created=record.created)
        run.parts.mkdir(exist_ok=True)
        files.write_record(run.record().to_json())
        return run

    def stop(self) -> None:
        self.cancel.set()

    def refuse(self, message: str) -> None:
        """The run will not be made (e.g. another is going): its record says why."""
        self.outcome = Failed(message)
        self.files.write_record(self.record().to_json())

    def execute(self, session, emit: Callable[[Event], None]) -> Finished | Failed:
        """`session` is not used (the model was loaded when the run started): the signature is `Run.execute`'s,
        so the page's worker and the queue execute either kind of run the same way."""
        started = time.monotonic()
        width, height, count = _result_shape(self.method, self.request, self.facts)
        try:
            emit(Stage(StageName.WRITING, f"{self.request.operation} x{self.request.factor} "
                                          f"({self.applied()['method']}): {self.facts.frames} frames"))
            if self.method is None:
                self._minterpolate(emit, count, started)
            else:
                self._stream(emit, width, height, started)
            streams_joined = self._join(self.files.video)
            shutil.rmtree(self.parts, ignore_errors=True)
            self.files.in_progress.unlink(missing_ok=True)
            outcome = Finished(streams_joined, count, self._fps(), self.parts_done, width, height, 0,
                               time.monotonic() - started)
        except Cancelled:
            partial = self._join(self.files.in_progress) if self.parts_done else None
            outcome = Finished(partial, 0, self._fps(), self.parts_done, width, height, 0,
                               time.monotonic() - started, stopped=True)
        except Exception as error:
            log.info("finishing failed", exc_info=True)
            partial = self.files.in_progress if self.files.in_progress.exists() else None
            outcome = Failed(user_message(error, self.files.folder), traceback.format_exc(), partial_video=partial)
        self.outcome = outcome
        self.files.try_write_record(self.record().to_json())
        emit(outcome)
        return outcome

    def _stream(self, emit, width: int, height: int, started: float) -> None:
        """Frames from the source, through the method, into the parts after those already whole."""
        self.parts_done = streams.done_parts(self.parts)
        per_part, total = self.request.part_frames, self.facts.frames
        index = self.parts_done * per_part
        pairs = streams.with_following(streams.read_frames(self.request.source, skip=index))
        for number in range(self.parts_done + 1, self.parts_total + 1):
            writer = streams.PartWriter(streams.part_path(self.parts, number), width, height, self._fps(),
                                        self.request.crf)
            try:
                for frame, following in pairs:
                    for result in self.method.outputs(frame, following):
                        writer.send(result)
                    index += 1
                    emit(Step(0, 1, index, total))
                    if self.cancel.is_set():
                        raise Cancelled()
                    if index % per_part == 0 and number < self.parts_total:
                        break
                writer.finish()
            except BaseException:
                writer.abandon()
                raise
            self.parts_done = number
            per_frame = self.method.frames(2) - 1  # frames made from each source frame but the last
            made = self.method.frames(total) if index == total else index * per_frame
            emit(SectionDone(number - 1, self.parts_total, made, self._join(self.files.in_progress),
                             time.monotonic() - started))

    def _minterpolate(self, emit, count: int, started: float) -> None:
        from .minterpolate import interpolate_file

        part = streams.part_path(self.parts, 1)
        if not part.exists():
            made = interpolate_file(self.request.source, part, self._fps(), count, self.request.crf, self.cancel,
                                    lambda done: emit(Step(0, 1, min(done, count), count)))
            if not made:
                raise Cancelled()
        self.parts_done = 1
        emit(SectionDone(0, 1, count, part, time.monotonic() - started))

    def _join(self, path: Path) -> Path:
        from framepack_core.media.segments import concat_mp4

        parts = [streams.part_path(self.parts, n) for n in range(1, self.parts_done + 1)]
        # A part's container misstates its length (B-frames shift its timestamps); told its true length, the
        # concat demuxer starts the next part on time and keeps every frame once.
        per_part = self.request.part_frames * (self.method.frames(2) - 1) if self.method is not None else None
        durations = {p: per_part / self._fps() for p in parts[:-1]} if per_part else {}
        return concat_mp4(parts, path, self.tags(), durations=durations)

    def _fps(self) -> float:
        return self.facts.fps * (self.request.factor if self.request.operation == "interpolate" else 1)

    def applied(self) -> dict:
        """What this run applies, as the record and the MP4 keep it."""
        described = self.method.described() if self.method is not None else {"method": "ffmpeg minterpolate"}
        return {"operation": self.request.operation, "factor": self.request.factor} | described

    def tags(self) -> dict[str, str]:
        """The MP4's tags: the source's own settings (so a remake still works) and every finishing step so far."""
        from framepack_core.run.mp4_tags import metadata_settings, mp4_tags

        settings = metadata_settings(self.request.source)
        return mp4_tags(settings | {"finishing": list(settings.get("finishing", [])) + [self.applied()]})

    def record(self) -> FinishingRecord:
        width, height, count = _result_shape(self.method, self.request, self.facts)
        if self.source_sha256 is None:
            self.source_sha256 = _sha256(self.request.source)
        record = FinishingRecord(
            created=self.created, operation=self.request.operation, source=str(self.request.source),
            source_sha256=self.source_sha256, source_frames=self.facts.frames, request=self.request.fields(),
            applied=self.applied(), video=self.files.video.name, frames=count, fps=self._fps(), width=width,
            height=height, parts=self.parts_total, parts_done=self.parts_done, status=Status.RUNNING)
        outcome = self.outcome
        if outcome is None:
            return replace(record, owner=this_process())
        if isinstance(outcome, Failed):
            partial = outcome.partial_video.name if outcome.partial_video else None
            return replace(record, status=Status.FAILED, error=outcome.message, video=None, partial_video=partial)
        record = replace(record, status=Status.STOPPED if outcome.stopped else Status.FINISHED,
                         seconds_elapsed=round(outcome.seconds_elapsed, 3), stopped=outcome.stopped)
        if outcome.stopped:
            record = replace(record, video=None, partial_video=outcome.video.name if outcome.video else None)
        return record


def is_finishing(path) -> bool:
    """Whether `path` (a record, MP4, in-progress MP4) belongs to a finishing run: the one rule by which every
    Resume (`generate --resume`, `upscale`/`interpolate --resume`, the page's) picks FinishingRun.resume."""
    try:
        return isinstance(read_any(path), FinishingRecord)
    except (OSError, ValueError):
        return False


def _sha256(path: Path) -> str:
    from .upscalers import file_sha256

    return file_sha256(path)


def _result_shape(method, request: FinishRequest, facts) -> tuple[int, int, int]:
    if method is None:  # minterpolate keeps the size and, like RIFE, the source's frames
        return facts.width, facts.height, (facts.frames - 1) * request.factor + 1
    width, height = method.size(facts.width, facts.height)
    return width, height, method.frames(facts.frames)
