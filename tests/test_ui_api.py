"""The named `/generate` endpoint through gradio_client, on the real tiny model set."""
import json

import pytest

from mp4info import mp4_info
from ports import free_port

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from app import MODEL_CHOICES
    from ui.serve import create_app, launch

    outputs = tmp_path_factory.mktemp("outputs")
    page, worker = create_app("tiny", 128, outputs, MODEL_CHOICES)
    _, url, _ = launch(page, worker, outputs, port=free_port())
    yield url, outputs
    page.close()
    worker.close()


def test_generate_one_second_gives_37_frames(server):
    url, outputs = server
    client = gradio_client.Client(url, verbose=False)
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(info) == ["/generate"]  # the page's own events stay private
    assert [p["parameter_name"] for p in info["/generate"]["parameters"]] == \
        ["image", "prompt", "seconds", "seed", "steps", "loras", "prompt_blend"]

    path = client.predict(image=gradio_client.handle_file("examples/hills.jpg"), prompt="the sun sets",
                          seconds=1, seed=11, steps=3, api_name="/generate")
    meta, frames = mp4_info(path)
    assert frames.shape[0] == 37 and meta["fps"] == 30

    records = [json.loads(p.read_text()) for p in outputs.glob("*.json")]
    assert len(records) == 1 and records[0]["status"] == "finished" and records[0]["settings"]["seed"] == 11
    stem = records[0]["video"][:-4]
    assert (outputs / f"{stem}.mp4").is_file() and (outputs / f"{stem}.png").is_file()


def test_generate_refuses_bad_values_with_a_clear_message(server):
    url, _ = server
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception, match="Please give a picture"):
        client.predict(image=None, prompt="x", seconds=1, seed=1, steps=2, api_name="/generate")
