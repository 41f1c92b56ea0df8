"""What a continued run reads is checked before anything is written: a cut-short MP4 is refused, not
continued into a broken video reported as finished; a file that is no video is one clean sentence (no
ffmpeg banner); an output that is an input, or shares an input's run files, is refused, by file
identity (a hard link of A given as B is A), and nothing is written (tiny set, 0.8 s clips)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import main
from framepack_core.events import Finished
from tests.support.helpers import run_events, tiny_request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clips(tiny_models, picture, tmp_path_factory):
    """Two finished 0.8 s videos made here (25 frames each), with their records, pictures and latents."""
    folder = tmp_path_factory.mktemp("input-clips")
    made = []
    for seed in (31, 32):
        request = tiny_request(picture, seconds=0.8, window=3, steps=1, seed=seed, step_cache=False)
        outcome = run_events(request, tiny_models, folder / f"clip{seed}.mp4")[-1]
        assert isinstance(outcome, Finished) and outcome.frames == 25
        made.append(outcome.video)
    return made


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _refused(args: list, capsys) -> str:
    assert main(["generate", "--model", "tiny", "--resolution", "128", "--steps", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_cut_short_mp4_is_refused_for_bridge_and_extend(clips, tmp_path, capsys):
    a, b = clips
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(a.read_bytes()[: len(a.read_bytes()) * 2 // 3])  # moov first: its header promises 25 frames
    out = tmp_path / "out"
    for args in (["--bridge", str(cut), str(b)], ["--extend", str(cut), "--prompt", "more"],
                 ["--extend", str(cut), "--from", "0.4"]):
        line = _refused(["--outputs", str(out), "--seconds", "0.4", *args], capsys)
        assert line.startswith("error: cut.mp4 is damaged or cut short: ffmpeg decodes only ")
        assert line.endswith("; give the whole video."), line
    assert not out.exists()


def test_a_file_that_is_no_video_is_one_clean_sentence(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    line = _refused(["--outputs", str(tmp_path / "out"), "--extend", str(text), "--prompt", "x"], capsys)
    assert line == ("error: notes.mp4 is not a video this app can read (Error opening input files: Invalid data "
                    "found when processing input).")
    assert "ffmpeg version" not in line and "configuration" not in line


def test_an_output_that_is_an_input_or_its_files_is_refused_and_nothing_written(clips, tmp_path, capsys):
    a, b = clips
    before = _snapshot(a.parent)
    cases = [["--bridge", str(a), str(b), "--output", str(a)],  # would replace a.json, a.png, a.latents
             ["--bridge", str(a), str(b), "--output", f"{a.parent}/../{a.parent.name}/{a.name}"],  # another spelling
             ["--extend", str(b), "--output", str(b)],
             ["--extend", str(b), "--from", "0.4", "--output", str(b)]]
    for args in cases:
        line = _refused(["--seconds", "0.4", *args], capsys)
        assert line.startswith("error: The output clip3") and "would write over clip3" in line, line
    # a picture given as the input of a run whose output's picture is that file
    picture = tmp_path / "same.png"
    picture.write_bytes((a.parent / "clip31.png").read_bytes())
    line = _refused(["--image", str(picture), "--prompt", "x", "--seconds", "0.4", "--output", str(tmp_path / "same.mp4")],
                    capsys)
    assert line.startswith("error: The output same.mp4 would write over same.png"), line
    assert _snapshot(a.parent) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.png"]


def test_a_hard_link_of_a_clip_is_that_clip(clips, tmp_path, capsys):
    a, _ = clips
    link = tmp_path / "other-name.mp4"
    os.link(a, link)
    out = tmp_path / "out"
    line = _refused(["--outputs", str(out), "--seconds", "0.4", "--bridge", str(a), str(link)], capsys)
    assert line.startswith("error: A bridge joins two different clips")
    line = _refused(["--seconds", "0.4", "--extend", str(a), "--output", str(link)], capsys)
    assert "would write over clip31.mp4" in line
    assert not out.exists() and link.read_bytes() == a.read_bytes()


def test_from_a_fresh_process_an_output_equal_to_the_input_is_one_line(clips, tmp_path):
    a, b = clips
    before = _snapshot(a.parent)
    done = subprocess.run([sys.executable, "app.py", "generate", "--model", "tiny", "--seconds", "0.4", "--bridge",
                           str(a), str(b), "--output", str(a)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: The output clip31.mp4 would write over clip31.mp4 or the files beside it (its record, picture, "
        "latents); give another --output, inputs are never written to."]
    assert _snapshot(a.parent) == before
