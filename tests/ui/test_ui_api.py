"""The named `/generate` endpoint through gradio_client, on the real tiny model set."""
import json

import gradio_client  # pinned in requirements-dev.txt: a broken install must fail, not skip
import pytest

from tests.support.mp4info import mp4_info, mp4_metadata
from tests.support.ports import free_port



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
        ["image", "prompt", "seconds", "seed", "steps", "loras", "prompt_blend", "keyframes", "keyframe_times", "loop"]

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


def test_nothing_in_a_users_text_fails_a_run(server):
    """A prompt far over the system's command-line limit (ffmpeg once got the metadata as arguments)."""
    url, outputs = server
    client = gradio_client.Client(url, verbose=False)
    prompt = "the sun sets; = # \\ \" ' slowly\n" * 6500  # over 200,000 characters, every escape ffmpeg knows
    assert len(prompt) > 200_000
    path = client.predict(image=gradio_client.handle_file("examples/hills.jpg"), prompt=prompt, seconds=1, seed=12,
                          steps=2, api_name="/generate")
    assert mp4_info(path)[1].shape[0] == 37
    tags = mp4_metadata(path)
    assert tags["title"] == "the sun sets; = # \\ \" ' slowly"  # the first line, every character intact
    assert json.loads(tags["comment"])["prompt"] == prompt[:65_536]  # bounded: readers parse tags as text
    record = json.loads(path_record(outputs, path).read_text())
    assert record["settings"]["prompt"] == prompt  # the run's record keeps it whole


def path_record(outputs, served_path):
    """The record of the run whose video the API served (it serves a copy under the same name)."""
    from pathlib import Path

    return outputs / (Path(served_path).stem + ".json")


def test_a_broken_picture_gets_the_apps_own_message(server, tmp_path):
    url, _ = server
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception) as caught:
        client.predict(image=gradio_client.handle_file(str(broken)), prompt="x", seconds=1, seed=1, steps=2,
                       api_name="/generate")
    assert "is not a picture" in str(caught.value) and "preprocess" not in str(caught.value)


def test_generate_takes_keyframes_and_refuses_bad_ones(server):
    url, outputs = server
    client = gradio_client.Client(url, verbose=False)
    with pytest.raises(Exception, match="The keyframe at 3 s is past the end of the video"):
        client.predict(image=gradio_client.handle_file("examples/hills.jpg"), prompt="x", seconds=1, seed=14,
                       steps=2, keyframes=[gradio_client.handle_file("examples/hills.jpg")], keyframe_times="3",
                       api_name="/generate")
    path = client.predict(image=gradio_client.handle_file("examples/hills.jpg"), prompt="x", seconds=1, seed=15,
                          steps=2, keyframes=[gradio_client.handle_file("examples/hills.jpg")],
                          keyframe_times="1.2:0.5", api_name="/generate")
    tags = json.loads(mp4_metadata(path)["comment"])
    assert tags["keyframes"] == [{"seconds": 1.2, "weight": 0.5}] and tags["loop"] is False
    assert tags["keyframe_sections"][0]["sections"] == [{"section": 0, "as": "post"}]
