"""Through a live server on 127.0.0.1: bad API input, two clients at once, and memory over many runs."""
import concurrent.futures
import gc
import json

import psutil
import pytest
from PIL import Image

from mp4info import mp4_info, mp4_metadata
from ports import free_port

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    from app import MODEL_CHOICES
    from ui.serve import create_app, launch
    from ui.worker import Worker

    outputs = tmp_path_factory.mktemp("outputs")
    worker = Worker(device="cpu", loader=lambda name, models_dir=None, progress=None: tiny_models)
    page, worker = create_app("tiny", 128, outputs, MODEL_CHOICES, worker=worker)
    _, url, _ = launch(page, worker, outputs, port=free_port())
    yield page, url, outputs
    page.close()
    worker.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("pic") / "start.png"
    Image.new("RGB", (160, 112), (200, 90, 40)).save(path)
    return str(path)


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
    args = dict(image=gradio_client.handle_file(picture), prompt="x", seconds=1, seed=1, steps=2) | change
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception) as caught:
        client.predict(**args, api_name="/generate")
    message = str(caught.value)
    assert words in message, message
    assert "Traceback" not in message and "File \"" not in message and len(message.splitlines()) <= 2
    assert set(outputs.iterdir()) == before


def test_runs_share_one_queue_of_one(server):
    page, _, _ = server
    runs = [fn for fn in page.fns.values() if fn.name in ("run", "generate")]
    assert len(runs) == 2
    assert {fn.concurrency_id for fn in runs} == {"gpu"}
    assert all(fn.concurrency_limit in (1, "default") for fn in runs)
    assert page._queue.default_concurrency_limit == 1


def test_two_clients_at_once_are_queued_and_get_their_own_videos(server, picture):
    _, url, outputs = server
    before = set(outputs.glob("*.mp4"))

    def one(seed):
        client = gradio_client.Client(url, verbose=False)
        return client.predict(image=gradio_client.handle_file(picture), prompt=f"run {seed}", seconds=1,
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


def test_memory_stays_flat_over_back_to_back_runs(tiny_models, tmp_path):
    """Eight short runs through one worker (bench/soak.py does twenty): RSS within 10% of the first run's."""
    from ui.handlers import Handlers, ServerSettings
    from ui.worker import Worker

    worker = Worker(device="cpu", loader=lambda name, models_dir=None, progress=None: tiny_models)
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=tmp_path))
    picture = Image.new("RGB", (160, 112), (10, 60, 200))
    process = psutil.Process()
    try:
        rss = []
        for seed in range(8):
            updates = list(handlers.page_run(picture, "waves", 1, seed, False, 2, 10, True, "tiny",
                                             "model default", None, 128, 16, 0))
            assert "Done: 37 frames" in updates[-1].progress
            gc.collect()
            rss.append(process.memory_info().rss)
    finally:
        worker.close()
    settled = rss[0]
    assert max(rss) <= settled * 1.10, [round(r / 2**20) for r in rss]
