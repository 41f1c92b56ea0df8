"""The page's Resume, Extend and Bridge buttons, through the handlers and the real worker (tiny set)."""
import numpy as np

from tests.support.helpers import fixed_session
from tests.support.mp4info import mp4_info
from ui.handlers import KEEP, Handlers, ServerSettings
from ui.worker import Worker


def form(picture, **values):
    return dict(image=str(picture), prompt="a red balloon rises", seconds=2.4, seed=3, randomize=False, steps=2,
                gs=10, step_cache=False, model="tiny", mode="forward", end_image=None, resolution=128, crf=16,
                vram_budget_gb=None) | values


def last(updates):
    return [u for u in updates][-1]


def test_nothing_to_resume_or_extend_says_so(tiny_models, tmp_path):
    handlers = Handlers(Worker(session=fixed_session(tiny_models)), ServerSettings("tiny", 128, tmp_path))
    assert "no stopped or failed run" in last(handlers.page_resume()).progress
    assert "Upload a video" in last(handlers.page_extend(None, 2, "")).progress
    refused = last(handlers.page_bridge(None, None, 2, "")).progress
    assert "Upload the video to bridge from, or finish one here first." in refused
    assert not any(tmp_path.iterdir())


def test_stop_resume_then_extend_on_the_page(tiny_models, picture, tmp_path):
    handlers = Handlers(Worker(session=fixed_session(tiny_models)), ServerSettings("tiny", 128, tmp_path))
    stopped = False
    for update in handlers.page_run(form(picture)):
        if update.video not in (None, KEEP) and not stopped:  # the first section is done: press Stop
            handlers.stop()
            stopped = True
    assert handlers.last_run.record().status == "stopped"
    resumed = last(handlers.page_resume())
    record = handlers.last_run.record()
    assert record.status == "finished" and record.frames == 73 and resumed.download
    extended = last(handlers.page_extend(None, 1.2, "it floats on"))
    frames = mp4_info(extended.download)[1]
    assert frames.shape[0] == 73 + 36 and np.array_equal(frames[:73], mp4_info(resumed.download)[1])
    # Bridge: from the last finished video (the extension) into one uploaded (the resumed run's).
    assert "Upload the video to bridge into." in last(handlers.page_bridge(None, None, 1.2, "")).progress
    bridged = mp4_info(last(handlers.page_bridge(None, str(resumed.download), 1.2, "")).download)[1]
    assert bridged.shape[0] == 109 + 36 + 73  # one section, less its first frame (the extension's last)
    assert np.array_equal(bridged[:109], frames) and np.array_equal(bridged[-73:], mp4_info(resumed.download)[1])

