"""The judged scenario: jobs added from the page and from `queue import`, `queue run` killed with
SIGKILL in the middle of the fourth, run again: every job finishes once, with the frames of an
uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from tests.support.queue_helpers import TINY, assert_each_video_is_its_uninterrupted_run

from jobs.store import JobStore

ROOT = Path(__file__).resolve().parents[2]
JOBS = 10  # 5 from the page's handlers, 5 from a file
# The smallest useful window (2 latent frames, 0.27 s a section): one section at 0.25 s, two at 0.5 s.
# The scenario is about jobs, kills and resumes, not the length of the videos.
SMALL = TINY | {"window": 2, "seconds": 0.25}


def queue_run(outputs):
    return subprocess.Popen([sys.executable, "app.py", "queue", "run", "--outputs", str(outputs)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_job_then_restart_finishes_every_job_once(tiny_models, picture, tmp_path):
    from tests.support.helpers import fixed_session

    from ui.handlers import Handlers, ServerSettings
    from ui.queue_handlers import QueueHandlers
    from ui.worker import Worker

    outputs = tmp_path / "outputs"
    worker = Worker(session=fixed_session(tiny_models))
    page = QueueHandlers(Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=outputs)))
    form = dict(image=Image.open(picture), prompt="a red balloon", randomize=False, gs=10, step_cache=True,
                mode="model default", end_image=None, crf=16, vram_budget_gb=0) | SMALL
    for n in range(5):  # the fourth has two sections: it is killed after the first and must resume
        assert page.add(form | {"seed": n % 2, "seconds": 0.5 if n == 3 else 0.25}).startswith("Queued")
    worker.close()
    rows = [json.dumps({"image": str(picture), "prompt": "a blue kite", "seed": n % 2} | SMALL) for n in range(5)]
    rows.insert(2, json.dumps({"image": str(picture), "prompt": "bad", "steps": "many"} | {"model": "tiny"}))
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(rows) + "\n")
    imported = subprocess.run([sys.executable, "app.py", "queue", "import", str(jobs_file), "--outputs", str(outputs),
                               "--allow-folder", str(picture.parent)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert imported.returncode == 2 and "jobs.jsonl, line 3: Steps must be a whole number" in imported.stderr
    store = JobStore(outputs)
    assert len(store.jobs()) == JOBS

    first = queue_run(outputs)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        fourth = store.get(4)
        if fourth.status == "running" and fourth.sections_done >= 1:
            break
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = store.jobs()
    assert [j.status for j in killed[:4]] == ["finished"] * 3 + ["running"]
    assert all(j.status == "queued" for j in killed[4:])

    second = queue_run(outputs)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    # The fourth resumed from its kept latents: the second process sampled only its second section.
    fourth_log = err.split("job 4:")[1].split("job 5:")[0]
    assert "section 2/2 done" in fourth_log and "section 1/2 done" not in fourth_log, fourth_log
    jobs = store.jobs()
    assert [j.status for j in jobs] == ["finished"] * JOBS
    assert [j.finishes for j in jobs] == [1] * JOBS  # no job ran twice to its end
    assert [j.attempts for j in jobs] == [1, 1, 1, 2] + [1] * (JOBS - 4)
    assert sorted(p.name for p in outputs.glob("*.mp4")) == sorted(j.video for j in jobs)  # one video a job, no leftovers

    assert_each_video_is_its_uninterrupted_run(jobs, outputs, tiny_models, tmp_path)
