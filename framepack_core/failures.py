"""What can go wrong in a run, and the one sentence a user reads about each.

Every front end shows `user_message(error)`; none words a failure of its own.
"""
from __future__ import annotations


class ModelsUnavailableError(RuntimeError):
    """The weights are neither local nor downloadable. str(error) is the whole message for users."""


class Cancelled(Exception):
    """Raised between steps and stages when the user pressed Stop."""


def user_message(error: BaseException) -> str:
    if isinstance(error, (ValueError, ModelsUnavailableError)):  # already written for users
        return str(error)
    if _is_out_of_memory(error):
        return ("The GPU ran out of memory within the run's VRAM budget: lower the resolution or the window, "
                "or raise the VRAM budget if the card has more free.")
    if isinstance(error, MemoryError):
        return ("The computer ran out of memory (RAM). Close other programs, or lower the resolution, "
                "and try again.")
    return f"Generation failed: {type(error).__name__}: {_first_line(error)}"


def _is_out_of_memory(error: BaseException) -> bool:
    import torch  # only when something failed: the run path has imported it already

    return isinstance(error, torch.OutOfMemoryError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "no details"
