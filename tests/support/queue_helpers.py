"""Helpers for the queue tests: a job's reference video (an uninterrupted run of the same settings)."""
from __future__ import annotations

from pathlib import Path

from tests.support.helpers import fixed_session
from tests.support.mp4info import mp4_info

from framepack_core.starts import FromPicture, begin
from jobs.intake import job_request

TINY = dict(model="tiny", resolution=128, seconds=1, steps=2)


def settings_key(settings: dict) -> str:
    """Settings that decide the pixels (the picture copies' names left out: all come from one picture)."""
    return repr(sorted((k, v) for k, v in settings.items() if k not in ("image", "image_name")))


def reference_frames(jobs, outputs: Path, models, folder: Path) -> dict:
    """Frames of one uninterrupted run per distinct job settings, keyed by settings_key."""
    frames = {}
    for job in jobs:
        key = settings_key(job.settings)
        if key in frames:
            continue
        path = folder / f"reference-{len(frames)}.mp4"
        run = begin(FromPicture(job_request(job.settings, outputs, path=path)))
        outcome = run.execute(fixed_session(models), lambda event: None)
        assert outcome.video is not None and not outcome.stopped
        frames[key] = mp4_info(path)[1]
    return frames


def assert_each_video_is_its_uninterrupted_run(jobs, outputs: Path, models, folder: Path,
                                               threads: int | None = None) -> None:
    """Every job's MP4 has exactly the frames of an uninterrupted run of its settings.

    `threads`: the intra-op thread count the jobs ran with where it is not this process's (a Ray worker's):
    the references are made with it too, as bit-equality is promised for one thread count (docs/NUMERICS.md)."""
    import numpy as np
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        references = reference_frames(jobs, outputs, models, folder)
    finally:
        torch.set_num_threads(before)
    for job in jobs:
        frames = mp4_info(outputs / job.video)[1]
        expected = references[settings_key(job.settings)]
        assert frames.shape == expected.shape, job.id
        assert np.array_equal(frames, expected), job.id
