"""What can go wrong in a run, and the one sentence a user reads about each.

Every front end shows `user_message(error)`; none words a failure of its own.
"""
from __future__ import annotations

import errno
from pathlib import Path


class ModelsUnavailableError(RuntimeError):
    """The weights are neither local nor downloadable. str(error) is the whole message for users."""


class RankLost(RuntimeError):
    """One of the processes of a run on several devices failed or died (parallel/launch.py). str(error) says
    which and how; user_message adds that the run resumes."""


class Cancelled(Exception):
    """Raised between steps and stages when the user pressed Stop."""


def user_message(error: BaseException, folder: Path | str | None = None) -> str:
    """`folder`: where the run writes, named when the disk is full or read-only."""
    if isinstance(error, (ValueError, ModelsUnavailableError)):  # already written for users
        return str(error)
    if isinstance(error, RankLost):
        return f"{error} What was finished is kept: resume the run (--resume, or Resume on the page)."
    disk = disk_message(error, folder)
    if disk:
        return disk
    if _is_out_of_memory(error):
        return ("The GPU ran out of memory within the run's VRAM budget: lower the resolution or the window, "
                "or raise the VRAM budget if the card has more free.")
    if isinstance(error, MemoryError):
        return ("The computer ran out of memory (RAM). Close other programs, or lower the resolution, "
                "and try again.")
    return f"Generation failed: {type(error).__name__}: {_first_line(error)}"


# What a full disk or a folder that turned read-only looks like, as an errno and in ffmpeg's words.
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "There is not enough space on the disk")
_READ_ONLY_WORDS = ("Read-only file system", "Permission denied")


def disk_problem(error: BaseException) -> str | None:
    """"full" or "read-only" when writing failed for lack of space or of permission; None otherwise."""
    code = getattr(error, "errno", None)
    if code in _DISK_FULL:
        return "full"
    if code in _READ_ONLY:
        return "read-only"
    text = str(error)
    if any(words in text for words in _DISK_FULL_WORDS):
        return "full"
    if any(words in text for words in _READ_ONLY_WORDS):
        return "read-only"
    return None


def disk_message(error: BaseException, folder: Path | str | None = None, begun: bool = True) -> str | None:
    """One line for a write that failed for a full disk or a read-only folder; None for other errors.
    A run that had not `begun` has nothing to resume: it is started again."""
    problem = disk_problem(error) if isinstance(error, (OSError, RuntimeError)) else None
    if problem is None:
        return None
    filename = getattr(error, "filename", None)
    where = str(folder) if folder is not None else str(Path(filename).parent) if filename else "the output folder"
    kept = "every file made before it is kept" if begun else "the run had not begun, so nothing of it was kept"
    then = "resume the run (--resume, or Resume on the page)" if begun else "start it again"
    if problem == "full":
        return f"The disk is full: nothing more could be written to {where}; {kept}. Free some space there, then {then}."
    return (f"The folder {where} cannot be written any more (read-only, or its permissions changed); {kept}. "
            f"Make it writable, then {then}.")


def _is_out_of_memory(error: BaseException) -> bool:
    import torch  # only when something failed: the run path has imported it already

    return isinstance(error, torch.OutOfMemoryError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "no details"
