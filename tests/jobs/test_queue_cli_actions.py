"""`app.py queue cancel|retry|delete|clear` and `queue list`'s header, as a user types them (fresh processes)."""
import subprocess
import sys
from pathlib import Path

from jobs.store import JobStore

ROOT = Path(__file__).resolve().parents[2]


def queue(*args, outputs):
    return subprocess.run([sys.executable, "app.py", "queue", *args, "--outputs", str(outputs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cancel_retry_delete_and_clear_from_the_command_line(tmp_path, picture):
    store = JobStore(tmp_path)
    first, second = (store.add({"image": str(picture), "prompt": text, "model": "tiny"}, label="p.png")
                     for text in ("one kite", "two kites"))
    done = queue("cancel", str(first), outputs=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (0, f"job {first} cancelled")
    again = queue("cancel", str(first), "99", outputs=tmp_path)  # not applicable, and not there: one line each
    assert again.returncode == 2 and again.stderr.splitlines() == [f"job {first} is stopped: nothing to cancel",
                                                                   "job 99: there is no such job"]
    assert store.get(first).status == "stopped"
    assert queue("retry", str(first), outputs=tmp_path).stderr.strip() == f"job {first} queued again"
    assert store.get(first).status == "queued"
    assert queue("delete", str(second), outputs=tmp_path).returncode == 0 and store.get(second) is None
    listed = queue("list", outputs=tmp_path).stdout.splitlines()
    assert listed[0].split() == ["#", "status", "done", "picture", "prompt", "video", "/", "message"]
    assert listed[1].split()[:2] == [str(first), "queued"] and len(listed) == 2
    store.finish(first, "finished", video="v.mp4")
    cleared = queue("clear", outputs=tmp_path)
    assert cleared.stderr.strip() == "removed 1 finished job from the list (their videos stay)"
    assert store.jobs() == []
