"""Following calls of a tree's own code, as stays in its files: the counting of tools/data_flow.py.

- A step is a call event (sys.setprofile's "call": a function, method, property, a generator resumed) whose code
  is in a project file: app.py and the files under framepack_core/, ui/, jobs/ and memory/ of the tree. Calls
  into the standard library, third-party packages, code made at run time (a dataclass's __init__) and these
  tools are not steps and end no stay; project code they call back is a step, made by the nearest project call
  under way (its caller here).
- A lookup is not a step: a call into a file other than its caller's that comes straight back (nothing under it
  runs in any other file: a settings table's property, a RunFiles path, an event), with everything under it. It
  answers its caller and is part of the caller's stay; counted, the table's lookups would be most of the stays
  and hide where the data goes. A call that goes on into a third file, or back into the caller's, is a step.
- Module bodies run by a first import are not steps, nor anything under them: loading code is not handling the
  data, and it would depend on which path ran first.
- A stay is a maximal stretch of consecutive steps in one file: a step counts as a new stay when its file
  differs from the current stay's. Coming back to a caller by a plain return is not a step; the caller's file
  gets a new stay when a function of it is called again (it did more of the work there).
- files: the distinct files of the stays; returns: stays in a file already been in and left = stays - files;
  returns by file: each file's stays beyond its first.
"""
from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("framepack_core", "ui", "jobs", "memory")  # packages whose files are steps, with app.py


class Call:
    """One call of project code: its file and function, the nearest project call it came from, and whether
    anything under it ran in another file."""
    __slots__ = ("file", "function", "parent", "reaches_other")

    def __init__(self, file: str, function: str, parent: Call | None):
        self.file, self.function, self.parent, self.reaches_other = file, function, parent, False

    def lookup(self) -> bool:
        """A call into another file that comes straight back (nothing under it leaves its file), or anything
        under one: part of the caller's stay."""
        parent = self.parent
        return parent is not None and (parent.lookup() or (self.file != parent.file and not self.reaches_other))


class Tracer:
    """The calls of project code the followed code makes, in order, per the module's definition."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.calls: list[Call] = []
        self.active = False
        self._files: dict[str, str | None] = {}
        self._stack: list[Call | None] = []  # the Python frames under way: their project Call, else None
        self._import_depth = 0  # > 0 while a module body (a first import) runs

    @property
    def steps(self) -> list[tuple[str, str]]:
        """(file, function) of each call that is not a lookup."""
        return [(call.file, call.function) for call in self.calls if not call.lookup()]

    @property
    def all_steps(self) -> list[tuple[str, str]]:
        """(file, function) of every call, lookups too."""
        return [(call.file, call.function) for call in self.calls]

    @contextmanager
    def following(self):
        self.calls, self._stack, self._import_depth, self.active = [], [], 0, True
        sys.setprofile(self._event)
        try:
            yield
        finally:
            self.pause()

    def pause(self) -> None:
        """Stop following; the calls still under way (a handler that handed its run on) end here."""
        sys.setprofile(None)
        self.active = False
        while self._stack:
            self._returned(self._stack.pop())

    def project_file(self, filename: str) -> str | None:
        """`filename` relative to the tree's root when it is a project file (app.py, or under PROJECT), else None."""
        if filename not in self._files:
            try:
                relative = Path(filename).resolve().relative_to(self.root)
            except (ValueError, OSError):
                relative = None
            keep = relative is not None and relative.suffix == ".py" and (
                relative.as_posix() == "app.py" or relative.parts[0] in PROJECT)
            self._files[filename] = relative.as_posix() if keep else None
        return self._files[filename]

    def _event(self, frame, event, arg) -> None:
        if event == "call":
            if self._import_depth or frame.f_code.co_name == "<module>":
                self._import_depth += 1
                return
            file = self.project_file(frame.f_code.co_filename)
            call = None
            if file is not None:
                call = Call(file, frame.f_code.co_qualname, self._caller())
                self.calls.append(call)
            self._stack.append(call)
        elif event == "return":
            if self._import_depth:
                self._import_depth -= 1
            elif self._stack:  # (frames begun before the following started return unseen)
                self._returned(self._stack.pop())

    @staticmethod
    def _returned(call: Call | None) -> None:
        if call is not None and call.parent is not None:
            call.parent.reaches_other |= call.file != call.parent.file or call.reaches_other

    def _caller(self) -> Call | None:
        return next((call for call in reversed(self._stack) if call is not None), None)


def stays(steps: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Consecutive steps in one file as one stay: (file, the functions called in it, in order, once each)."""
    result: list[tuple[str, list[str]]] = []
    for file, function in steps:
        if not result or result[-1][0] != file:
            result.append((file, []))
        if function not in result[-1][1]:
            result[-1][1].append(function)
    return result


def figures(sequence: list[str]) -> dict:
    """A path's stays, files, returns, returns per file (stays beyond a file's first) and the file sequence."""
    counts = Counter(sequence)
    returned = {file: n - 1 for file, n in counts.most_common() if n > 1}
    return {"stays": len(sequence), "files": len(counts), "returns": len(sequence) - len(counts),
            "returns_by_file": returned, "sequence": sequence}
