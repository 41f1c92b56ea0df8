"""A run's files: one name, `<date>-<time>_<seed>`, for the picture, the video and the record.

    NAME.png              the picture as the model saw it (cropped to its bucket)
    NAME.end.png          the end frame, if any
    NAME.key1.png ...     the keyframes, if any, in time order (cropped like the end frame)
    NAME.mp4              the video, replaced only when the run ends
    NAME.in-progress.mp4  the video so far, while the run goes
    NAME.json             the record: settings and status (running, finished, stopped, failed)
    NAME.latents.safetensors  the section latents so far (to resume or extend; media/latents.py)

Names are claimed by creating the record exclusively, so two runs (two processes, even) that
start in the same second with the same seed never share one.

A record that says "running" names its owner (owner.py); read back after that process is
gone, it is marked failed on the spot, so a killed run never stays "running". Scratch files a
killed run left (`.NAME.in-progress.XXXX.segments`, `.NAME.json.partial`, ...) are removed by the
next run or resume in that folder.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

from ..atomic import SCRATCH_SUFFIX, write_atomically
from ..events import ENDED, Status
from .owner import owner_alive, owner_words
from .record import FinishingRecord, NotARecord, RunRecord, record_of, record_problem


@dataclass(frozen=True)
class RunFiles:
    folder: Path
    name: str

    @property
    def picture(self) -> Path:
        return self.folder / f"{self.name}.png"

    @property
    def end_picture(self) -> Path:
        return self.folder / f"{self.name}.end.png"

    def keyframe(self, number: int) -> Path:
        """The picture of keyframe `number` (1 = the earliest)."""
        return self.folder / f"{self.name}.key{number}.png"

    @property
    def video(self) -> Path:
        return self.folder / f"{self.name}.mp4"

    @property
    def in_progress(self) -> Path:
        return self.folder / f"{self.name}.in-progress.mp4"

    @property
    def latents(self) -> Path:
        return self.folder / f"{self.name}.latents.safetensors"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.name}.json"

    def write_record(self, record: dict) -> Path:
        """The JSON record (a record's `to_json()`, or a JSON object as read), written whole to a temporary name
        and renamed into place."""
        write_atomically(self.record, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))
        return self.record

    def read_record(self) -> dict:
        """The record's JSON, of either kind of run (record.record_of gives it its type; read_any does both); one
        whose owner is gone is marked failed (and written back) first. NotARecord (a
        ValueError) when the file is not a JSON object of a sane size."""
        record = load_record(self.record)
        if record.get("status") == Status.RUNNING and owner_alive(record.get("owner")) is False:
            record = interrupted(record)
            try:
                self.write_record(record)
            except OSError:
                pass  # a full or read-only disk: the next reader marks it again
        return record

    def try_write_record(self, record: dict) -> bool:
        """The record, when the disk lets us: a run that failed for a full disk still ends with its message."""
        try:
            self.write_record(record)
            return True
        except OSError:
            return False


# A run's record is a few kB (a long timed prompt: some tens); anything near this is not one of ours, and
# reading it whole on every listing would stall the page.
MAX_RECORD_BYTES = 4 * 1024 * 1024


def load_record(path: Path) -> dict:
    """The JSON object in `path`: OSError when it cannot be read, NotARecord when it is not a JSON object
    (a list, a number, broken or deeply nested JSON, a huge file, bytes that are not UTF-8)."""
    with open(path, "rb") as file:
        data = file.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise NotARecord(f"it is larger than a run's record ({MAX_RECORD_BYTES // 1024 // 1024} MiB or more)")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotARecord(f"it is not JSON ({error.__class__.__name__})") from None
    except RecursionError:
        raise NotARecord("its JSON is nested too deeply") from None
    if not isinstance(value, dict):
        raise NotARecord(f"it holds a JSON {type(value).__name__}, not an object")
    return value


def read_any(path) -> RunRecord | FinishingRecord:
    """The record of the run (a generation or a finishing run) that `path` (its JSON, MP4, in-progress MP4,
    latents or picture) belongs to, a killed run's marked failed first. OSError when it cannot be read, NotARecord
    (a ValueError) when it is no run's record this version reads."""
    files = path if isinstance(path, RunFiles) else files_of(Path(path))
    return record_of(files.read_record())


def interrupted(record: dict) -> dict:
    """A "running" record whose process is gone, as it really ended."""
    owner = record.get("owner") or {}
    message = (f"The run was interrupted: its process ({owner_words(owner)}) ended before the run did; "
               "resume it to finish it (--resume, or Resume on the page).")
    record = {k: v for k, v in record.items() if k != "owner"}
    return record | {"status": Status.FAILED, "error": message, "interrupted": True, "video": None}


SUFFIXES = (".in-progress.mp4", ".latents.safetensors", ".end.png", ".mp4", ".json", ".png")


def files_of(path: Path) -> RunFiles:
    """The run a file belongs to: its MP4, in-progress MP4, record, latents or picture."""
    path = Path(path)
    for suffix in SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return RunFiles(path.parent, path.name[: -len(suffix)])
    return RunFiles(path.parent, path.stem)


def claim_files(folder: Path, seed: int, exact: Path | None = None, stem: str | None = None) -> RunFiles:
    """Fresh names in `folder` (created if needed), or the exact MP4 path the user gave. `stem`: the name's
    first part instead of `<date>-<time>_<seed>` (a finishing run is named after its source video).

    An exact path keeps the user's choice: its video is replaced only when the new one is done.
    """
    if exact is not None:
        exact.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_scratch(exact.parent)
        return RunFiles(exact.parent, exact.stem)
    folder.mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(folder)
    stem = stem or f"{time.strftime('%Y%m%d-%H%M%S')}_{seed}"
    n = 1
    while True:
        files = RunFiles(folder, stem if n == 1 else f"{stem}-{n}")
        if not any(folder.glob(f"{files.name}.*")):
            try:  # exclusive creation: of two claimants of one name, one wins and the other moves on
                with open(files.record, "x", encoding="utf-8") as claim:
                    claim.write("{}\n")
                return files
            except FileExistsError:
                pass
        n += 1


def release_claim(files: RunFiles) -> None:
    """The name of a run that never started (refused before its first record): its claim ("{}") removed, so
    a refused queue job leaves no file; the queue keeps the name, and a retry claims it again."""
    try:
        if files.record.read_bytes().strip() == b"{}":
            files.record.unlink()
    except OSError:
        pass  # gone already, or a record a run wrote: kept


# Another host's process cannot be asked whether it lives: its run counts as going while any of its files
# changed this recently. A section takes minutes at most on the smallest card; loading the models the first
# time (before any file changes) can take long on a slow disk, hence the margin.
STALE_SECONDS = 30 * 60


def live_owner(files: RunFiles, record) -> dict | None:
    """The owner of a run that some process may still be making (its record, a run's or a finishing run's, says
    running and that process lives, or, on another host, its files changed in the last STALE_SECONDS); None when
    nobody makes it."""
    owner = record.owner
    if record.status != Status.RUNNING or not isinstance(owner, dict):
        return None
    alive = owner_alive(owner)
    if alive is None:
        alive = time.time() - last_change(files) < STALE_SECONDS
    return owner if alive else None


def last_change(files: RunFiles) -> float:
    """When any of the run's files (record, latents, videos, scratch) last changed; 0 when none is there."""
    times = [0.0]
    for path in (files.record, files.latents, files.in_progress, files.video,
                 *files.folder.glob(f".{glob_escape(files.name)}.*")):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def latest_unfinished(folder: Path, look_at: int = 50) -> RunFiles | None:
    """The newest run in `folder` that was stopped, failed or killed (a killed one's record is marked so when
    read here): what the page resumes after it was restarted. Only the newest `look_at` records are read."""
    try:
        records = sorted(Path(folder).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for path in records[:look_at]:
        files = files_of(path)
        try:
            record = files.read_record()
        except (OSError, ValueError):
            continue
        if record.get("status") in (Status.STOPPED, Status.FAILED) and record_problem(record) is None:
            return files
    return None


# What a run writes aside while it runs (segments, concat lists, files before their rename).
_SCRATCH = (".segments", SCRATCH_SUFFIX, ".concat.txt", ".metadata.txt", ".joining.mp4")


def remove_dead_scratch(folder: Path) -> list[Path]:
    """Remove the scratch files of runs in `folder` that have ended (or whose process is gone); a run
    still going (here or in another process) keeps its own. Returns what was removed."""
    folder = Path(folder)
    try:
        scratch = [p for p in folder.glob(".*") if p.name.endswith(_SCRATCH)]
    except OSError:
        return []
    if not scratch:
        return []
    names = sorted((p.name[:-len(".json")] for p in folder.glob("*.json")), key=len, reverse=True)
    removed = []
    for path in scratch:
        name = next((n for n in names if path.name.startswith(f".{n}.")), None)
        if name is None or record_status(RunFiles(folder, name)) not in ENDED:
            continue  # not a run's, or its run may still be going
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def record_status(files: RunFiles) -> str:
    """The status its record gives ("" when there is none or it cannot be read)."""
    return status_and_owner(files)[0]


def status_and_owner(files: RunFiles) -> tuple[str, dict | None]:
    """What the run's record says of who makes it, whatever else the record holds (a run's or a finishing run's,
    even one the readers pass over): its status ("" when there is none or it cannot be read) and, while it says
    running, the owner it names. A killed run's record is marked failed first."""
    try:
        record = files.read_record()
    except (OSError, ValueError):
        return "", None
    status, owner = record.get("status", ""), record.get("owner")
    status = status if isinstance(status, str) else ""
    return status, (owner if status == Status.RUNNING and isinstance(owner, dict) else None)

