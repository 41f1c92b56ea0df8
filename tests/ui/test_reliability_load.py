"""Through a live server on 127.0.0.1: bad API input, two clients at once, and memory over many runs."""
import concurrent.futures
import json

import gradio_client  # pinned in requirements-dev.txt: a broken install must fail, not skip
import pytest
from tests.support.mp4info import mp4_info, mp4_metadata
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    from app import MODEL_CHOICES
    from ui.serve import create_app, launch
    from tests.support.helpers import cpu_session
    from ui.worker import Worker

    outputs = tmp_path_factory.mktemp("outputs")
    worker = Worker(session=cpu_session(loader=lambda name, models_dir=None, progress=None: tiny_models))
    page, worker = create_app("tiny", 128, outputs, MODEL_CHOICES, worker=worker)
    _, url, _ = launch(page, worker, outputs, port=free_port())
    yield page, url, outputs
    page.close()
    worker.close()


@pytest.mark.parametrize("change, words", [
    ({"image": None}, "Please give a picture"),
    ({"seconds": 0}, "ength"),
    ({"seconds": -3}, "ength"),
    ({"steps": 0}, "Steps"),
    ({"seed": "abc"}, "eed"),
    ({"seed": 1.5}, "eed"),
])
def test_bad_api_input_is_one_clear_message_and_writes_nothing(server, picture, change, words):
    _, url, outputs = server
    before = set(outputs.iterdir())
    args = dict(image=gradio_client.handle_file(str(picture)), prompt="x", seconds=1, seed=1, steps=2) | change
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception) as caught:
        client.predict(**args, api_name="/generate")
    message = str(caught.value)
    assert words in message, message
    assert "Traceback" not in message and "File \"" not in message and len(message.splitlines()) <= 2
    assert set(outputs.iterdir()) == before


def test_the_api_waits_its_turn_and_a_page_start_is_answered_at_once(server):
    """/generate calls queue behind each other (one at a time); the page's Start is not held in gradio's queue,
    where it would wait unseen: the worker refuses it at once while anything runs (issue 28)."""
    page, _, _ = server
    runs = {fn.name: fn for fn in page.fns.values() if fn.name in ("run", "generate")}
    assert set(runs) == {"run", "generate"}
    assert runs["generate"].concurrency_id == "gpu" and runs["generate"].concurrency_limit in (1, "default")
    assert runs["run"].concurrency_limit is None
    assert page._queue.default_concurrency_limit == 1


def test_two_clients_at_once_are_queued_and_get_their_own_videos(server, picture):
    _, url, outputs = server
    before = set(outputs.glob("*.mp4"))

    def one(seed):
        client = gradio_client.Client(url, verbose=False)
        return client.predict(image=gradio_client.handle_file(str(picture)), prompt=f"run {seed}", seconds=1,
                              seed=seed, steps=2, api_name="/generate")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(one, (101, 202), timeout=120))
    assert paths[0] != paths[1]
    for path, seed in zip(paths, (101, 202)):
        assert mp4_info(path)[1].shape[0] == 37
        assert json.loads(mp4_metadata(path)["comment"])["seed"] == seed  # each got its own video, not the other's
    made = set(outputs.glob("*.mp4")) - before
    assert len(made) == 2 and {p.stem.rsplit("_", 1)[1].split("-")[0] for p in made} == {"101", "202"}
    records = [json.loads(p.with_suffix(".json").read_text()) for p in made]
    assert sorted(r["status"] for r in records) == ["finished", "finished"]


def test_memory_stays_flat_over_back_to_back_runs():
    """Eight short runs through one worker (bench/cpu/soak.py, twenty by default), in a process of their
    own: this test session's other servers and threads would otherwise move the figure."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "bench/cpu/soak.py", "--runs", "8", "--json"], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["runs"] == 8 and result["failures"] == []
    # The process's own memory: the weights are mapped files, whose pages the OS page cache keeps or drops.
    assert result["anon_rss_growth_ratio"] <= 1.10, result["anon_rss_mib"]
