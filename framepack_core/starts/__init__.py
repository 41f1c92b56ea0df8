"""How a run starts: a front end builds one `Start` from its own inputs and hands it to `begin`.

    begin(FromPicture(request))                      picture.py  a new video from a picture
    begin(Resume(path))                              resume.py   a stopped, failed or killed run, on from where it was
    begin(Extend(path, seconds, from_seconds=None))  extend.py   a finished video continued (or branched) forward
    begin(Bridge(first, second, seconds))            bridge.py   the seconds leading from one clip into another

Each kind's module holds all of its story: its inputs' checks and messages, the request it makes, its
origin for the pipeline (engine/beginning.py: what the stages ask of any start), and its part of the
record and of the latents file, written and read there (kinds.py reads a part back). continued.py holds
what the starts that continue a video share.
"""
from __future__ import annotations

from typing import Protocol

from .bridge import Bridge
from .extend import Extend
from .picture import FromPicture
from .resume import Resume

__all__ = ["Bridge", "Extend", "FromPicture", "Resume", "Start", "begin"]


class Start(Protocol):
    def parts(self) -> tuple:
        """(the request, its origin, the files of the run it continues under its own name, or None: new files)."""


def begin(start: Start):
    """The run `start` makes, its inputs checked and its first files written (run.lifecycle.Run); ValueError,
    one sentence for the user, when it cannot be made (nothing is written then)."""
    from ..run.lifecycle import Run

    request, origin, files = start.parts()
    return Run.start(request, origin) if files is None else Run.again(request, files, origin)
