"""Upscale and Interpolate on the page's Outputs tab (ui/finish_page.py): the picked run's finished video through
the page's worker as a FinishingRun; bad input as one red line with nothing written."""
import json

import pytest
import torch

from tests.support.finishing_models import esrgan_state, save
from tests.support.mp4info import mp4_info, write_clip
from framepack_core.finishing.finishing_run import FinishingRun
from framepack_core.finishing.request import FinishRequest
from ui.finish_page import DEFAULT_MODEL, FinishHandlers
from ui.handlers import KEEP, Handlers, ServerSettings
from ui.layout import build_page
from ui.outputs import OutputsHandlers
from ui.worker import Worker


@pytest.fixture
def page(tmp_path):
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path / "out"
    out.mkdir()
    write_clip(out / "run1.mp4", 160, 96, 30, 8)  # a finished run, as its record says
    (out / "run1.json").write_text(json.dumps({"app": "FramePack desktop", "status": "finished", "video": "run1.mp4",
                                               "created": "2026-01-01T00:00:00", "settings": {"prompt": "waves"}}))
    save(esrgan_state(2), tmp_path / "upscalers" / "tiny-x2.pth")
    worker = Worker(session=object())  # a finishing run needs no generation session
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=out))
    yield FinishHandlers(OutputsHandlers(handlers), upscalers=tmp_path / "upscalers", rife_folder=tmp_path / "rife")
    worker.close()
    torch.set_num_threads(torch_threads)


def test_upscale_pressed_makes_the_picked_runs_video_bigger(page):
    assert page.model_choices() == [DEFAULT_MODEL, "tiny-x2.pth", "realesrgan-x2plus", "realesrgan-x4plus",
                                    "realesr-general-x4v3"]  # the dropped file, then the named defaults
    updates = list(page.finish("run1", "upscale", 2, "tiny-x2.pth"))
    assert updates[0].running is True and updates[-1].running is False
    made = page.outputs.folder / "run1.upscaled-x2.mp4"
    assert updates[-1].download == str(made) and "tiny-x2.pth" in updates[-1].summary
    meta, frames = mp4_info(made)
    assert (meta["size"], frames.shape[0]) == ((320, 192), 8)
    assert json.loads((page.outputs.folder / "run1.upscaled-x2.json").read_text())["status"] == "finished"


def test_bad_choices_are_one_red_line_and_write_nothing(page):
    before = sorted(p.name for p in page.outputs.folder.iterdir())
    for args, words in [(("", "upscale", 2, None), "Pick a run in the list first."),
                        (("run1", "upscale", 4, "tiny-x2.pth"), "tiny-x2.pth upscales x2, not x4"),
                        (("run1", "upscale", 4, DEFAULT_MODEL), "HF_HUB_OFFLINE forbids downloading")]:
        (update,) = list(page.finish(*args))
        assert words in update.progress and "fp-failed" in update.progress and update.running is False
        assert update.download is KEEP
    assert sorted(p.name for p in page.outputs.folder.iterdir()) == before


def test_the_page_has_the_controls(page):
    built = build_page(page.outputs.handlers)
    ids = {getattr(block, "elem_id", None) for block in built.blocks.values()}
    assert {"fp-out-upscale", "fp-out-interpolate", "fp-out-upscaler", "fp-out-scale", "fp-out-factor"} <= ids


def stopped_upscale(page, stop_at: int = 5) -> FinishingRun:
    """An upscale of run1 in the outputs folder, stopped in its second part (parts of 4 frames)."""
    run = FinishingRun.start(FinishRequest("upscale", page.outputs.folder / "run1.mp4", 2, model="tiny-x2",
                                           folder=page.outputs.folder, upscalers=page.upscalers, part_frames=4))
    run.execute(None, lambda event: run.stop() if getattr(event, "step", 0) == stop_at else None)
    return run


def test_a_finishing_run_is_listed_with_its_source_and_resumed_from_the_outputs_tab(page):
    """Listed in Outputs with what it finished from; the Outputs tab's Resume continues it after its whole parts
    to the bytes of an uninterrupted upscale, its progress in frames. The Generate tab's Resume is only for
    that page's own run, so it points there (issue 28)."""
    whole = FinishingRun.start(FinishRequest("upscale", page.outputs.folder / "run1.mp4", 2, model="tiny-x2",
                                             folder=page.outputs.folder.parent / "whole", upscalers=page.upscalers,
                                             part_frames=4))
    whole.execute(None, lambda event: None)
    stopped = stopped_upscale(page)
    rows = {row[-1]: row for row in page.outputs.rows()}  # by file name, the list's last column
    title, length, status, made_from, _ = rows[stopped.files.name]
    assert title.startswith("upscale x2 of run1.mp4") and (length, status) == ("0.27 s", "stopped")  # 8 at 30 fps
    assert "run1" in made_from
    video, details = page.outputs.details(stopped.files.name)
    assert video == str(stopped.files.in_progress) and "**upscale x2** of `run1.mp4`: stopped" in details
    updates = list(page.outputs.resume(stopped.files.name))
    shown = " ".join(u.progress for u in updates if isinstance(u.progress, str))
    assert "Frame 8 of 8" in shown and "Step " not in shown and "Section " not in shown
    assert updates[-1].download == str(stopped.files.video)
    assert stopped.files.video.read_bytes() == whole.files.video.read_bytes()
    again = stopped_upscale(page, stop_at=6)  # a fresh name beside the finished one
    assert again.files.name != stopped.files.name
    (refusal,) = list(page.outputs.handlers.page_resume())  # the Generate tab's Resume: not this page's run
    assert "Outputs tab" in refusal.refused
    updates = list(page.outputs.resume(again.files.name))
    assert updates[-1].download == str(again.files.video)
    assert again.files.video.read_bytes() == whole.files.video.read_bytes()
