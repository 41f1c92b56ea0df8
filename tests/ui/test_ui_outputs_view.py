"""How the Outputs tab presents a run (ui/outputs_view.py): a thumbnail that is a frame of the run's own video,
its title, lineage and settings table. Real MP4s written by the app's writer; no models."""
import numpy as np
from PIL import Image

from framepack_core.media.video import write_mp4
from framepack_core.run.files import RunFiles
from framepack_core.run.record import RunRecord
from framepack_core.settings import SETTINGS
from tests.support.mp4info import mp4_info
from ui.outputs import OutputRun
from ui.outputs_view import lineage, settings_table, thumbnail, title


def _run(folder, name, frames, **record):
    files = RunFiles(folder, name)
    Image.new("RGB", (32, 16), (0, 200, 0)).save(files.picture)  # the start picture: all green
    if frames is not None:
        write_mp4(frames, files.video)
    base = {"app": "FramePack desktop", "created": "2026-12-06T05:16:50", "status": "finished", "fps": 30,
            "frames": None if frames is None else len(frames), "settings": {"prompt": "a kite rises", "seed": 7}}
    return OutputRun(files, RunRecord.from_json(base | record))


def test_the_thumbnail_is_the_middle_frame_of_the_runs_own_video(tmp_path):
    # Eleven frames, each one grey level: the thumbnail says which frame it is.
    frames = np.stack([np.full((16, 32, 3), 20 * i, np.uint8) for i in range(11)])
    run = _run(tmp_path, "kite", frames)
    path = thumbnail(run, tmp_path / "cache")
    decoded = mp4_info(run.files.video)[1]
    shown = np.asarray(Image.open(path), dtype=int)
    errors = [np.abs(shown - frame.astype(int)).mean() for frame in decoded]
    assert int(np.argmin(errors)) == 5 and errors[5] < 2  # frame 5 of 11 (JPEG's rounding only), not the picture
    assert thumbnail(run, tmp_path / "cache") == path  # made once, then kept
    # No video yet: the start picture stands in.
    assert thumbnail(_run(tmp_path, "new", None, status="running"), tmp_path / "cache") == tmp_path / "new.png"


def test_a_run_reads_as_its_prompt_time_and_where_it_came_from(tmp_path):
    run = _run(tmp_path, "20261206-051650_7", None, settings={"prompt": "  a kite\nrises over the hills " * 4,
                                                                 "seed": 7, "step_cache": True, "loras": []})
    assert title(run) == "a kite rises over the hills a kite rises ov… · 12-06 05:16"
    picture = dict(settings={}, status="finished")
    assert lineage(RunRecord(**picture, start={"branches": "a.mp4", "from_seconds": 1.2})) == "branch of a at 1.2 s"
    assert lineage(RunRecord(**picture, start={"bridges": ["a.mp4", "b.mp4"]})) == "bridges a → b"
    assert lineage(RunRecord(**picture, start={"extends": "a.mp4"})) == "extends a" and lineage(RunRecord(**picture)) == ""
    table = settings_table(run.record)
    assert table.splitlines()[:2] == ["| setting | value |", "|---|---|"]
    assert "| Seed | 7 |" in table and f"| {SETTINGS['step_cache'].widget.label} | on |" in table
    assert "loras" not in table.lower()  # empty settings are left out
