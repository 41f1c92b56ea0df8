"""Issue 27, finding 7: a queue file's rows name pictures on the server; only those inside folders the user
named are read, and a path outside gets the same sentence whether it exists or not (no existence oracle)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support.helpers import ScriptedEngine, cpu_session
from jobs.store import JobStore
from ui.handlers import Handlers, ServerSettings
from ui.queue_handlers import QueueHandlers
from ui.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def secret(tmp_path):
    folder = tmp_path / "secret"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "private.png")
    return folder


@pytest.fixture
def page(tmp_path):
    made = []

    def make(import_folders=()):
        worker = Worker(session=cpu_session(engine=ScriptedEngine()))
        made.append(worker)
        named = {"import_folders": tuple(import_folders)} if import_folders else {}
        settings = ServerSettings(model="tiny", resolution=128, outputs=tmp_path / "out", **named)
        return QueueHandlers(Handlers(worker, settings))
    yield make
    for worker in made:
        worker.close()


def _upload(tmp_path: Path, rows: list[dict]) -> Path:
    """The file as gradio keeps an upload: in a folder of its own, away from any picture."""
    upload = tmp_path / "gradio-upload" / "jobs.jsonl"
    upload.parent.mkdir(exist_ok=True)
    upload.write_text("".join(json.dumps({"prompt": "p", "model": "tiny", "resolution": 128} | row) + "\n"
                              for row in rows))
    return upload


def test_the_pages_import_reads_no_picture_outside_the_outputs_folder(page, secret, tmp_path):
    queue = page()
    inside = queue.store.outputs / "mine.png"  # the outputs folder is the page's own
    inside.parent.mkdir(parents=True)
    Image.new("RGB", (64, 48), (1, 2, 3)).save(inside)
    private, missing = secret / "private.png", secret / "nonexistent.png"
    rows = [{"image": str(private)}, {"image": str(missing)}, {"image": "/root/.bashrc"},
            {"image": "/root/nonexistent"}, {"image": "../secret/private.png"},
            {"image": str(inside), "end_image": str(private)},
            {"image": str(inside), "keyframes": [f"{private}@0.5"]}]
    told = queue.import_(_upload(tmp_path, rows)).split("  \n")
    assert told[0] == "Queued 0 job(s)." and len(told) == len(rows) + 1
    answers = [line.split(": ", 1)[1] for line in told[1:]]
    sentence = r"(image|end_image|keyframe) '(.*)' is not a picture file in the folders an import may read \(.*\); " \
               r"name its folder with --allow-folder\."
    assert [re.fullmatch(sentence, line).group(1) for line in answers] == ["image"] * 5 + ["end_image", "keyframe"]
    # the same sentence for a file that exists and one that does not
    assert answers[0].replace("private", "X") == answers[1].replace("nonexistent", "X")
    assert answers[2].replace(".bashrc", "X") == answers[3].replace("nonexistent", "X")
    assert not (queue.store.outputs / "queue-inputs").exists() and JobStore(queue.store.outputs).jobs() == []

    assert queue.import_(_upload(tmp_path, [{"image": str(inside)}])) == "Queued 1 job(s)."
    allowed = page(import_folders=[secret])  # a folder named at start
    assert allowed.import_(_upload(tmp_path, [{"image": str(private), "keyframes": [f"{private}@0.5"]}])) \
        == "Queued 1 job(s)."


def test_a_link_inside_an_allowed_folder_to_a_file_outside_is_refused(page, secret, tmp_path):
    queue = page()
    queue.store.outputs.mkdir(parents=True)
    link = queue.store.outputs / "link.png"
    link.symlink_to(secret / "private.png")
    told = queue.import_(_upload(tmp_path, [{"image": str(link)}]))
    assert told.startswith("Queued 0 job(s).") and "not a picture file in the folders an import may read" in told


def test_queue_import_on_the_command_line_reads_the_files_folder_and_named_ones(secret, tmp_path):
    rows = tmp_path / "rows" / "jobs.csv"
    rows.parent.mkdir()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(rows.parent / "here.png")
    rows.write_text(f"image,prompt,model,resolution\nhere.png,a,tiny,128\n{secret / 'private.png'},b,tiny,128\n")
    command = [sys.executable, "app.py", "queue", "import", str(rows), "--outputs", str(tmp_path / "out")]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "jobs.csv, line 3: image" in refused.stderr
    assert "not a picture file in the folders an import may read" in refused.stderr
    assert "queued 1 job; 1 bad row left out" in refused.stderr
    named = subprocess.run(command + ["--allow-folder", str(secret)], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert named.returncode == 0 and "queued 2 jobs" in named.stderr


def _clip(path: Path, shade: int) -> Path:
    import imageio_ffmpeg
    import numpy as np

    writer = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=30, macro_block_size=2)
    writer.send(None)
    for t in range(9):
        writer.send(np.full((48, 64, 3), shade + t, np.uint8))
    writer.close()
    return path


def test_a_path_edited_in_a_latents_file_is_not_read_on_resume(tmp_path):
    """7: the videos a saved run continues are named in its latents file; a resume reads a source only when its
    bytes are those the run started from, so an edited path cannot splice another file's frames in."""
    import hashlib

    from framepack_core.starts.kinds import recalled

    source, other = _clip(tmp_path / "source.mp4", 10), _clip(tmp_path / "private.mp4", 200)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    kept = {"video": str(source), "frames": 9, "latents": 3, "sha256": digest}
    assert recalled(kept).source == source  # the very file: read
    with pytest.raises(ValueError, match="is not the file this run started from"):
        recalled(kept | {"video": str(other)})
    with pytest.raises(ValueError, match="is not the file this run started from"):
        recalled({"bridge": [str(source), str(other)], "bridge_sha256": [digest, digest]})
    with pytest.raises(ValueError, match="is missing"):
        recalled(kept | {"video": str(tmp_path / "nothing.mp4")})
