"""A full disk (ENOSPC) or a folder turning read-only at each write of a run: one line naming the
folder, every earlier file intact, and the run resumes once there is room (tiny set, two sections)."""
import errno
import subprocess

import pytest

import framepack_core.media.latents as latents_module
import framepack_core.media.segments as segments_module
import framepack_core.run.files as run_files
from framepack_core.events import Failed, Finished
from framepack_core.media.latents import load_latents
from tests.support.helpers import fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import FromPicture, Resume, begin


def _request(picture):
    return tiny_request(picture, seconds=1.0, window=3, steps=2, seed=7)  # two sections of 12 frames


@pytest.fixture(scope="module")
def uninterrupted(tiny_models, picture, tmp_path_factory):
    return run_events(_request(picture), tiny_models, tmp_path_factory.mktemp("whole") / "whole.mp4")[-1].video


def _fail_from(calls: int, real, error):
    """`real`, failing with `error` from its `calls`-th call on (what a disk that filled up mid-run does)."""
    count = {"n": 0}

    def write(*args, **kwargs):
        count["n"] += 1
        if count["n"] >= calls:
            raise error
        return real(*args, **kwargs)
    return write


def _ffmpeg_out_of_space(calls: int):
    real = subprocess.run
    count = {"n": 0}

    def run(command, *args, **kwargs):
        count["n"] += 1
        if count["n"] >= calls:
            return subprocess.CompletedProcess(command, 1, "", "[out#0/mp4] Error opening output file: "
                                                               "No space left on device")
        return real(command, *args, **kwargs)
    return run


FULL = OSError(errno.ENOSPC, "No space left on device")
READ_ONLY = OSError(errno.EROFS, "Read-only file system")
INJECTIONS = {  # the write that fails, and how: each once the first section is on disk
    "latents": lambda: (latents_module, "write_atomically", _fail_from(3, latents_module.write_atomically, FULL)),
    "segment": lambda: (segments_module, "write_mp4", _fail_from(2, segments_module.write_mp4, FULL)),
    "mp4": lambda: (segments_module.subprocess, "run", _ffmpeg_out_of_space(2)),
    "read-only folder": lambda: (latents_module, "write_atomically",
                                 _fail_from(3, latents_module.write_atomically, READ_ONLY)),
}


@pytest.mark.parametrize("where", list(INJECTIONS))
def test_a_full_disk_at_each_write_ends_in_one_line_and_resumes(tiny_models, picture, tmp_path, monkeypatch,
                                                                uninterrupted, where):
    output = tmp_path / "v.mp4"
    with monkeypatch.context() as patch:
        patch.setattr(*INJECTIONS[where]())
        failed = run_events(_request(picture), tiny_models, output)[-1]
    assert isinstance(failed, Failed)
    message = failed.message
    assert "\n" not in message and str(tmp_path) in message and "resume" in message, message
    assert ("cannot be written" if where == "read-only folder" else "disk is full") in message
    # Every earlier file intact: the first section's latents and the video so far, no scratch left.
    assert load_latents(tmp_path / "v.latents.safetensors").done >= 1
    assert mp4_info(tmp_path / "v.in-progress.mp4")[1].shape[0] >= 9  # the first section (inverted: its 9)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert run_files.RunFiles(tmp_path, "v").read_record()["status"] == "failed" and not output.exists()

    outcome = begin(Resume(output)).execute(fixed_session(tiny_models), lambda event: None)  # room again
    assert isinstance(outcome, Finished) and outcome.frames == 25
    assert output.read_bytes() == uninterrupted.read_bytes()


def test_a_full_disk_before_the_run_begins_is_one_sentence(picture, tmp_path, monkeypatch):
    monkeypatch.setattr(run_files, "write_atomically", _fail_from(1, run_files.write_atomically, FULL))
    with pytest.raises(ValueError, match="The disk is full: nothing more could be written to .*start it again"):
        begin(FromPicture(_request(picture).__class__.from_fields(image=picture, model="tiny", prompt="p", resolution=128,
                                                           path=tmp_path / "a.mp4")))
    assert not list(tmp_path.iterdir())  # nothing to resume is left, not a picture without its run
