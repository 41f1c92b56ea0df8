"""One rule for "the same file": by identity (device and file number, so hard links, symlinks and
other spellings of one path are one file), by name only where a file does not exist yet.

A run's output must never be one of its inputs, nor share its run's files (a video's record, picture
and latents sit beside it under its name): writing them would destroy the very thing being read.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import RunFiles, files_of


def same_file(a, b) -> bool:
    """Whether paths `a` and `b` name one file (os.path.samefile also works on Windows)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (yet): by where the names lead
        return Path(os.path.abspath(a)).resolve() == Path(os.path.abspath(b)).resolve()


def written_by(output: Path, keyframes: int = 0) -> list[Path]:
    """Every file a run writing the exact MP4 `output` creates or replaces (files.claim_files's names)."""
    files = RunFiles(output.parent, output.stem)
    return [files.video, files.in_progress, files.record, files.picture, files.end_picture, files.latents,
            *(files.keyframe(n) for n in range(1, keyframes + 1))]


def read_by(source: Path) -> list[Path]:
    """An input and the files of its run beside it (a video made here: its record, picture, latents)."""
    files = files_of(source)
    return [source, files.video, files.record, files.picture, files.end_picture, files.latents]


def check_output_apart(output, inputs, keyframes: int = 0) -> None:
    """ValueError (one sentence) when the exact `output` would write over an input or its run's files."""
    if output is None:
        return
    output = Path(output)
    written = written_by(output, keyframes)
    for source in inputs:
        if source is None or not isinstance(source, (str, Path)):
            continue  # a picture handed over in memory has no file to protect
        if any(same_file(kept, new) for kept in read_by(Path(source)) if kept.exists() for new in written):
            raise ValueError(f"The output {output.name} would write over {Path(source).name} or the files beside it "
                             "(its record, picture, latents); give another --output, inputs are never written to.")
