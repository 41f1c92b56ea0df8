"""A continued run (bridge, extension, branch) killed before its first section's latents is made again
as the same kind of run: resumed from the command line or the page, its video is byte for byte the one
it would have made uninterrupted (the clips joined, the source's frames first), never a plain video
from its picture (tiny set, 0.8 s clips, one step)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from framepack_core.events import Finished
from framepack_core.run.lifecycle import Run
from framepack_core.run.owner import this_process
from tests.support.helpers import executed, fixed_session, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import Bridge, Extend, Resume, begin

ROOT = Path(__file__).resolve().parents[2]
K = 3  # latent frames per section: 12 frames


@pytest.fixture(scope="module")
def clips(tiny_models, picture, tmp_path_factory):
    """Two finished 0.8 s videos made here (25 frames each)."""
    folder = tmp_path_factory.mktemp("continued-clips")
    made = []
    for seed in (21, 22):
        request = tiny_request(picture, seconds=0.8, window=K, steps=1, seed=seed, step_cache=False)
        outcome = run_events(request, tiny_models, folder / f"clip{seed}.mp4")[-1]
        assert isinstance(outcome, Finished) and outcome.frames == 25
        made.append(outcome.video)
    return made


def _killed_before_its_first_section(run: Run) -> None:
    """The run's files as a SIGKILL while its models loaded leaves them: its picture and a running record
    whose owner is gone, no latents."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = {"pid": child.pid, "started": round(psutil.Process(child.pid).create_time(), 3),
             "host": this_process()["host"]}
    child.wait()
    run.files.write_record(run.record().to_json() | {"owner": owner})
    assert not run.files.latents.exists() and run.files.picture.exists()


STARTS = {
    "bridge": lambda a, b, folder: begin(Bridge(a, b, 0.8, steps=1, folder=folder)),
    "extension": lambda a, b, folder: begin(Extend(a, 0.4, steps=1, folder=folder, prompt="a kite")),
    "branch": lambda a, b, folder: begin(Extend(a, 0.4, steps=1, folder=folder, from_seconds=0.4)),
}
FRAMES = {"bridge": 25 + 2 * 4 * K + 25, "extension": 25 + 4 * K, "branch": None}


@pytest.mark.parametrize("kind", ["bridge", "extension", "branch"])
def test_killed_before_its_first_section_resumes_as_the_same_kind_of_run(kind, tiny_models, clips, tmp_path):
    a, b = clips
    whole = executed(STARTS[kind](a, b, tmp_path / "whole"), tiny_models)[-1]
    assert isinstance(whole, Finished)
    killed = STARTS[kind](a, b, tmp_path / "killed")
    _killed_before_its_first_section(killed)
    outcome = begin(Resume(killed.files.video)).execute(fixed_session(tiny_models), lambda event: None)
    assert isinstance(outcome, Finished) and not outcome.stopped
    frames = mp4_info(outcome.video)[1]
    assert len(frames) == len(mp4_info(whole.video)[1]) == (FRAMES[kind] or len(frames))
    assert outcome.video.read_bytes() == whole.video.read_bytes()
    record = json.loads(killed.files.record.read_text())
    assert record["status"] == "finished" and record["frames"] == len(frames)
    assert ("bridges" in record, "extends" in record, "branches" in record) == (
        kind == "bridge", kind == "extension", kind == "branch")


def test_the_command_line_and_the_page_resume_a_killed_bridge_and_extension(tiny_models, clips, tmp_path):
    from ui.handlers import Handlers, ServerSettings
    from ui.worker import Worker

    a, b = clips
    whole = {kind: executed(STARTS[kind](a, b, tmp_path / "whole"), tiny_models)[-1] for kind in ("bridge", "extension")}
    bridge = STARTS["bridge"](a, b, tmp_path / "cli")
    _killed_before_its_first_section(bridge)
    resumed = subprocess.run([sys.executable, "app.py", "generate", "--resume", str(bridge.files.video), "--json"],
                             cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["frames"] == 74
    assert bridge.files.video.read_bytes() == whole["bridge"].video.read_bytes()

    page = tmp_path / "page"
    extension = STARTS["extension"](a, b, page)
    _killed_before_its_first_section(extension)
    handlers = Handlers(Worker(session=fixed_session(tiny_models)), ServerSettings("tiny", 128, page))
    from ui.outputs import OutputsHandlers

    final = list(OutputsHandlers(handlers).resume(extension.files.name))[-1]  # the Outputs tab's Resume
    assert final.download == str(extension.files.video)
    assert extension.files.video.read_bytes() == whole["extension"].video.read_bytes()
