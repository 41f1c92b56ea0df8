"""The written record counts what the file holds, not what the sections were meant to add up to; and a
video made here has the cut points the README says (a forward one about every section, an inverted one
only near its end), which a branch copies bit for bit (tiny set, --window 3)."""
import json

import numpy as np

import framepack_core.media.segments as segments_module
from framepack_core.events import Finished
from framepack_core.media.video_files import cut_points
from tests.support.helpers import run_events, tiny_request
from tests.support.mp4info import mp4_info


def test_the_record_and_the_outcome_count_the_frames_in_the_file(tiny_models, picture, tmp_path, monkeypatch):
    """An encoder that writes one frame more per segment than it is given (as a re-encode once did): the record
    must say what a reader of the MP4 finds."""
    real = segments_module.write_mp4
    monkeypatch.setattr(segments_module, "write_mp4",
                        lambda frames, path, **kw: real(np.concatenate([frames, frames[-1:]]), path, **kw))
    request = tiny_request(picture, seconds=0.8, window=3, steps=1, mode="forward", step_cache=False)
    outcome = run_events(request, tiny_models, tmp_path / "v.mp4")[-1]
    assert isinstance(outcome, Finished)
    held = len(mp4_info(outcome.video)[1])
    assert held != 25  # the injected frames are there
    record = json.loads((tmp_path / "v.json").read_text())
    assert outcome.frames == record["frames"] == held


def test_cut_points_of_videos_made_here_are_the_readmes(tiny_models, picture, tmp_path):
    found = {}
    for mode in ("forward", "inverted"):
        request = tiny_request(picture, seconds=1.6, window=3, steps=1, mode=mode, step_cache=False)
        outcome = run_events(request, tiny_models, tmp_path / f"{mode}.mp4")[-1]
        assert (outcome.frames, outcome.sections) == (49, 4)
        found[mode] = cut_points(outcome.video)
    assert found == {"forward": [0, 4, 16, 28], "inverted": [0, 25, 37]}  # README, --extend --from
