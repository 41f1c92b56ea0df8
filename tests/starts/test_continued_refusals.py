"""What a continued run cannot do is refused in one sentence before anything is loaded or written: a
length outside the settings table's range (inf, 1e308, nan; an empty box on the page), a branch of a
one-frame clip, and flags the continuation decides itself (never silently dropped); a full disk at a
run's start says to start it again (there is nothing to resume) and leaves no half-written picture."""
import errno

import pytest

import framepack_core.run.files as run_files
from app import main
from framepack_core.events import Finished
from framepack_core.request import Request
from tests.support.helpers import run_events, tiny_request
from tests.support.mp4info import write_clip
from framepack_core.starts import Extend, FromPicture, begin

TINY = ["generate", "--model", "tiny", "--steps", "1"]


@pytest.fixture(scope="module")
def clips(tiny_models, picture, tmp_path_factory):
    """Two finished 0.8 s videos made here at resolution 128 (25 frames each)."""
    folder = tmp_path_factory.mktemp("refusal-clips")
    made = []
    for seed in (41, 42):
        request = tiny_request(picture, seconds=0.8, window=3, steps=1, seed=seed, step_cache=False)
        outcome = run_events(request, tiny_models, folder / f"clip{seed}.mp4")[-1]
        assert isinstance(outcome, Finished) and outcome.frames == 25
        made.append(outcome.video)
    return made


def _one_line(args: list, capsys) -> str:
    assert main([*TINY, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("seconds", ["inf", "1e308", "nan", "-1", "121"])
def test_a_length_out_of_range_is_the_tables_one_sentence(seconds, clips, tmp_path, capsys):
    a, b = clips
    out = tmp_path / "out"
    shown = {"inf": "inf", "1e308": "1e+308", "nan": "nan", "-1": "-1", "121": "121"}[seconds]
    for how in (["--bridge", str(a), str(b)], ["--extend", str(a)], ["--extend", str(a), "--from", "0.4"]):
        line = _one_line(["--outputs", str(out), "--seconds", seconds, *how], capsys)
        if seconds in ("inf", "nan"):
            assert line == f"error: Length in seconds must be a number, not {shown}.", line
        else:
            assert line == f"error: Length in seconds must be above 0 and at most 120, not {shown}.", line
    assert not out.exists()


def test_an_empty_length_box_on_the_page_is_one_sentence(clips, tmp_path):
    from ui.handlers import Handlers, ServerSettings
    from ui.worker import Worker

    a, b = clips
    handlers = Handlers(Worker(), ServerSettings("tiny", 128, tmp_path / "out"))
    for updates in (handlers.page_extend(str(a), None, "more"), handlers.page_bridge(str(a), str(b), None, "between")):
        updates = list(updates)
        assert len(updates) == 1 and updates[0].running is False
        assert "Length in seconds must be a number, not empty." in updates[0].progress
    assert not (tmp_path / "out").exists()


def test_a_one_frame_clip_is_not_branched(tmp_path, capsys):
    one = write_clip(tmp_path / "one.mp4", 64, 48, fps=30, frames=1)
    line = _one_line(["--outputs", str(tmp_path / "out"), "--extend", str(one), "--from", "0.01", "--prompt", "x",
                      "--seconds", "0.4"], capsys)
    assert line == ("error: one.mp4 has one frame; a branch keeps some of a video's frames, so it needs two or more "
                    "(extend it instead).")
    assert not (tmp_path / "out").exists()


def test_flags_a_continuation_cannot_honour_are_refused_not_dropped(clips, picture, tmp_path, capsys):
    a, b = clips
    out = tmp_path / "out"
    cases = [
        (["--bridge", str(a), str(b), "--keyframe", f"{picture}@0.2"], "A bridge (--bridge) cannot honour --keyframe"),
        (["--bridge", str(a), str(b), "--loop"], "A bridge (--bridge) cannot honour --loop; leave it out."),
        (["--bridge", str(a), str(b), "--mode", "forward"],
         "A bridge (--bridge) cannot honour --mode forward (it is sampled inverted); leave it out."),
        (["--bridge", str(a), str(b), "--resolution", "256"],
         "A bridge (--bridge) cannot honour --resolution 256 (its saved latents are at 128); leave it out."),
        (["--extend", str(a), "--loop", "--end-image", str(picture)],
         "An extension (--extend) cannot honour --end-image, --loop; leave them out."),
        (["--extend", str(a), "--from", "0.4", "--mode", "inverted"],
         "A branch (--extend with --from) cannot honour --mode inverted (it is sampled forward); leave it out."),
        (["--extend", str(a), "--image", str(picture)], "An extension (--extend) cannot honour --image; leave it out."),
    ]
    for args, words in cases:
        line = _one_line(["--outputs", str(out), "--seconds", "0.4", *args], capsys)
        assert line.startswith(f"error: {words}"), line
    assert not out.exists()
    # what they keep anyway is no conflict
    run = begin(Extend(a, 0.4, mode="forward", resolution=128, folder=out))
    assert run.request.method.mode == "forward" and run.request.method.resolution == 128


def test_a_full_disk_at_the_start_says_start_again_and_leaves_nothing(picture, tmp_path, monkeypatch):
    """The record is the start's last write: it fails, and the picture already written goes with the claim."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_files, "write_atomically", full)
    with pytest.raises(ValueError) as refused:
        begin(FromPicture(Request.from_fields(image=picture, model="tiny", prompt="p", resolution=128, seconds=0.4,
                                      folder=tmp_path / "out")))
    message = str(refused.value)
    assert message.startswith(f"The disk is full: nothing more could be written to {tmp_path / 'out'}; the run had "
                              "not begun")
    assert message.endswith("Free some space there, then start it again.") and "resume" not in message
    assert list((tmp_path / "out").iterdir()) == []
