"""What a run writes before any model loads: its names claimed, the pictures as the model sees them and a
first record. All or nothing: on a full disk or a read-only folder what was written is removed again (what
an earlier run at an exact --output had stays as it was), and the user reads one sentence.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager, suppress
from pathlib import Path

from PIL import Image

from ..atomic import write_atomically
from ..failures import disk_message
from ..media.pictures import crop_to_bucket, resize_and_center_crop
from .files import RunFiles, claim_files


@contextmanager
def claimed(request):
    """The run's files, their names claimed (NAME.json exists); what the block writes is its first files."""
    folder, exact = request.output.folder, request.output.path
    check_writable(folder)
    # Nothing is made yet, so a full disk here leaves nothing to resume: what was written is removed again.
    kept = [p for p in first_paths(RunFiles(exact.parent, exact.stem), request) if p.exists()] if exact else []
    with disk_refusal(folder, begun=False):
        files = claim_files(folder, request.method.seed, exact)
        try:
            yield files
        except OSError:
            for path in first_paths(files, request):
                if path not in kept:
                    with suppress(OSError):
                        path.unlink(missing_ok=True)
            raise


def write_first(files: RunFiles, request, record: dict) -> None:
    """The pictures as the model sees them, each written whole or not at all, then the first record."""
    pixels = crop_to_bucket(request.image, request.method.resolution)
    height, width = pixels.shape[:2]  # every picture at the start picture's size, as the model sees it
    pictures = [(files.picture, pixels)]
    if request.end_image is not None:
        pictures.append((files.end_picture, resize_and_center_crop(request.end_image, width, height)))
    for number, (picture, _, _) in enumerate(request.keyframes, 1):
        pictures.append((files.keyframe(number), resize_and_center_crop(picture, width, height)))
    for path, array in pictures:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        write_atomically(path, buffer.getvalue())
    files.write_record(record)


def first_paths(files: RunFiles, request) -> list[Path]:
    """What a run's start writes: the record and the pictures."""
    return [files.record, files.picture, files.end_picture,
            *(files.keyframe(n) for n in range(1, len(request.keyframes) + 1))]


@contextmanager
def disk_refusal(folder, begun: bool = True):
    """A full disk or a read-only folder before the run begins: one sentence (ValueError), like bad input.
    `begun`: whether there is a run to resume once there is room (else it is started again)."""
    try:
        yield
    except OSError as error:
        message = disk_message(error, folder, begun)
        if message is None:
            raise
        raise ValueError(message) from error


def check_writable(folder: Path) -> None:
    """Refuse an output folder we could not write, before any model is loaded."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"The output folder {str(folder)!r} lies inside {str(parent)!r}, which is a file.")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"The folder {str(parent)!r} is not writable.")
            return
