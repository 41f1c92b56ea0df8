"""The Generate, Queue and Outputs tabs in real Chromium: a run made with `generate` shows in Outputs,
Remake fills the Generate form, Resume continues a stopped run from Outputs, Branch here continues a video
from the player's time into a new run whose first frames are the source's, Bridge joins two runs with the
way from one into the other. With FRAMEPACK_SCREENSHOT=1 it saves docs/screenshot.png (the Outputs tab)
for the README; this file runs after test_ui_browser.py, so its picture is the one kept.
"""
import re
import subprocess
import sys

import pytest
from framepack_core.starts import Extend, begin

from tests.browser.test_ui_browser import ROOT, drop_file, page, screenshot, server, set_slider  # noqa: F401 (fixtures)

from playwright.sync_api import expect

CLI_PROMPT = "made on the command line"
BRANCH_PROMPT = "a branch starts here"


def _pick(page, text: str) -> None:
    """Click the Outputs list's row holding `text`."""
    page.locator("#fp-out-table [role=gridcell]").filter(has_text=text).first.click()


def _thumbnail_is_its_own_frame(page, url, video) -> None:
    """The newest run's thumbnail (the gallery's first) is the middle frame of its own video, not its picture."""
    import io
    from urllib.parse import urljoin

    import numpy as np
    from PIL import Image

    from tests.support.mp4info import mp4_info

    gallery = page.locator("#fp-out-gallery")
    expect(gallery).to_contain_text(CLI_PROMPT, timeout=20_000)  # redrawn since the run came (its caption)
    thumb = gallery.locator("img").first
    expect(thumb).to_be_visible()
    # Drawn while the run was going it shows the run's picture; the next redraw (within the tab's 2 s timer) a frame.
    expect(thumb).to_have_attribute("src", re.compile(r"\.jpg$"), timeout=20_000)
    shown = np.asarray(Image.open(io.BytesIO(page.request.get(urljoin(url, thumb.get_attribute("src"))).body()))
                       .convert("RGB"), dtype=int)
    frames = mp4_info(video)[1].astype(int)
    errors = [np.abs(shown - frame).mean() for frame in frames]
    assert int(np.argmin(errors)) == len(frames) // 2 and min(errors) < 0.5 * np.median(errors), errors


def test_three_tabs_outputs_lists_remakes_and_resumes(server, page, tmp_path):  # noqa: F811 (fixtures)
    url, outputs = server
    page.goto(url)
    tabs = page.locator("#fp-tabs")
    for name in ("Generate", "Queue", "Outputs"):
        expect(tabs.get_by_role("tab", name=name)).to_be_visible()
    progress = page.locator("#fp-progress")

    # A run stopped after its first section, on the Generate tab.
    drop_zone = page.locator("#fp-image").get_by_role("button", name=re.compile("Drop an image"))
    drop_file(page, drop_zone, ROOT / "examples" / "hills.jpg", "image/jpeg")
    expect(page.locator("#fp-image img")).to_be_visible()
    page.locator("#fp-prompt textarea").fill("waves roll in and out")
    set_slider(page, "fp-seconds", 3)  # two sections: Stop lands in the second, Resume makes only it
    set_slider(page, "fp-steps", 20)  # a second section long enough that Stop lands inside it on a fast machine
    page.locator("#fp-start").click()
    expect(page.locator("#fp-video video")).to_be_visible(timeout=60_000)
    expect(progress).to_contain_text("Section 2 of 2", timeout=30_000)
    page.locator("#fp-stop").click()
    expect(progress).to_contain_text("Stopped; the video so far is kept", timeout=30_000)

    # A run made on the command line while the page is open: the Outputs tab reads the folder live.
    tabs.get_by_role("tab", name="Outputs").click()
    made = subprocess.run([sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128",
                           "--seconds", "1", "--steps", "2", "--seed", "4242", "--prompt", CLI_PROMPT,
                           "--outputs", str(outputs), "--image", str(ROOT / "examples" / "hills.jpg")],
                          cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    table = page.locator("#fp-out-table")
    expect(table).to_contain_text(CLI_PROMPT, timeout=20_000)
    expect(table).to_contain_text("stopped")

    # Remake: the Generate tab holds the command-line run's settings.
    _pick(page, CLI_PROMPT)
    expect(page.locator("#fp-out-picked textarea")).to_have_value(re.compile(r"_4242$"))
    expect(page.locator("#fp-out-video video")).to_be_visible()
    _thumbnail_is_its_own_frame(page, url, outputs / (page.locator("#fp-out-picked textarea").input_value() + ".mp4"))
    page.locator("#fp-out-remake").click()
    expect(page.locator("#fp-prompt textarea")).to_have_value(CLI_PROMPT)
    expect(page.locator("#fp-seed input")).to_have_value("4242")
    expect(page.locator("#fp-seconds input[type=number]")).to_have_value("1")
    expect(page.locator("#fp-steps input[type=number]")).to_have_value("2")
    expect(page.locator("#fp-image img")).to_be_visible()

    # Resume: the stopped run, picked in the list, is finished on the Generate tab.
    tabs.get_by_role("tab", name="Outputs").click()
    _pick(page, "stopped")
    page.locator("#fp-out-resume").click()
    expect(progress).to_contain_text("Done:", timeout=120_000)
    tabs.get_by_role("tab", name="Outputs").click()
    expect(table).not_to_contain_text("stopped", timeout=10_000)
    _pick(page, "waves roll in and out")
    expect(page.locator("#fp-out-video video")).to_be_visible()
    expect(page.locator("#fp-out-settings")).to_contain_text("waves roll in and out")
    records = [p.read_text() for p in outputs.glob("*.json")]
    assert len(records) == 2 and all('"status": "finished"' in r for r in records)

    screenshot(page, tmp_path)


def _seek(page, seconds: float) -> float:
    """Seek the Outputs player, once it knows the video's length, as a person dragging its bar; the time it shows."""
    page.wait_for_function("() => (document.querySelector('#fp-out-video video') || {}).readyState >= 1")
    return page.evaluate("""t => new Promise(done => {
        const player = document.querySelector('#fp-out-video video');
        player.addEventListener('seeked', () => done(player.currentTime), { once: true });
        player.currentTime = t;
    })""", seconds)


def test_branch_here_continues_from_the_players_time(server, page):  # noqa: F811 (fixtures)
    import json

    import numpy as np

    from framepack_core.media.video_files import cut_points
    from tests.support.mp4info import mp4_info

    url, outputs = server
    # 1.6 s in sections of 3 latent frames (inverted: 49 frames, cut points at frames 25 and 37, where
    # sections were joined), so that the video can be cut near the player's time without re-encoding it.
    made = subprocess.run([sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128",
                           "--seconds", "1.6", "--window", "3", "--steps", "1", "--seed", "5151",
                           "--prompt", BRANCH_PROMPT,
                           "--outputs", str(outputs), "--image", str(ROOT / "examples" / "hills.jpg")],
                          cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    source = next(outputs.glob("*_5151.json"))
    before = {p.name for p in outputs.iterdir()}
    page.goto(url)
    tabs, progress = page.locator("#fp-tabs"), page.locator("#fp-progress")
    tabs.get_by_role("tab", name="Outputs").click()
    expect(page.locator("#fp-out-table")).to_contain_text(BRANCH_PROMPT, timeout=20_000)
    _pick(page, BRANCH_PROMPT)
    expect(page.locator("#fp-out-picked textarea")).to_have_value(source.stem)
    expect(page.locator("#fp-out-video video")).to_be_visible()

    # At the start (the player not moved yet): the run path's one sentence, and nothing is written.
    with pytest.raises(ValueError) as refused:
        begin(Extend(source.with_suffix(".mp4"), 0.8, from_seconds=0.0, folder=outputs))
    assert _seek(page, 0) == 0
    page.locator("#fp-out-branch").click()
    expect(progress.locator(".fp-failed")).to_have_text(str(refused.value))
    assert {p.name for p in outputs.iterdir()} == before

    # Seeked to 0.9 s: a new run keeps the source up to the cut point nearest it and continues 0.8 s more.
    tabs.get_by_role("tab", name="Outputs").click()
    assert _seek(page, 0.9) == 0.9
    page.locator("#fp-out-seconds input").fill("0.8")
    page.locator("#fp-out-branch").click()
    expect(progress).to_contain_text("Done:", timeout=120_000)
    new = [p for p in outputs.glob("*.json") if p.name not in before]
    assert len(new) == 1
    record = json.loads(new[0].read_text())
    assert record["status"] == "finished"
    tabs.get_by_role("tab", name="Outputs").click()
    expect(page.locator("#fp-out-table")).to_contain_text(new[0].stem, timeout=20_000)

    branch_video = new[0].with_suffix(".mp4")
    assert record["branches"] == source.with_suffix(".mp4").name
    kept = round(record["from_seconds"] * record["fps"])  # the record says where it cut
    points = [p for p in cut_points(source.with_suffix(".mp4")) if p > 0]
    assert kept == min(points, key=lambda p: abs(p - 0.9 * record["fps"])), (kept, points)  # the time reached it
    src_frames, branch_frames = mp4_info(source.with_suffix(".mp4"))[1], mp4_info(branch_video)[1]
    assert np.array_equal(branch_frames[:kept], src_frames[:kept])
    assert branch_frames.shape[0] == record["frames"] > kept
    assert not np.array_equal(branch_frames[kept], src_frames[kept])  # then the new frames



def _generate(outputs, seed: int, prompt: str):
    """A 0.8 s run made with `generate` (sections of 3 latent frames, one step); its MP4."""
    made = subprocess.run([sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128",
                           "--seconds", "0.8", "--window", "3", "--steps", "1", "--seed", str(seed),
                           "--prompt", prompt, "--outputs", str(outputs),
                           "--image", str(ROOT / "examples" / "hills.jpg")], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return next(outputs.glob(f"*_{seed}.mp4"))


def test_bridge_joins_two_runs_with_the_way_between_them(server, page):  # noqa: F811 (fixtures)
    import json

    import numpy as np

    from tests.support.mp4info import mp4_info

    url, outputs = server
    first = _generate(outputs, 6161, "the first clip of a bridge")  # same picture and size, other seeds
    second = _generate(outputs, 6262, "the second clip of a bridge")
    before = {p.name for p in outputs.iterdir()}
    page.goto(url)
    tabs, progress = page.locator("#fp-tabs"), page.locator("#fp-progress")
    tabs.get_by_role("tab", name="Outputs").click()
    expect(page.locator("#fp-out-table")).to_contain_text("the second clip of a bridge", timeout=20_000)
    _pick(page, "the first clip of a bridge")
    expect(page.locator("#fp-out-picked textarea")).to_have_value(first.stem)

    # Bridge with no run chosen to bridge into: refused on the Outputs tab, which stays open, and nothing written.
    page.locator("#fp-out-bridge").click()
    expect(page.locator("#fp-out-message")).to_have_text("Choose the run to bridge into first.")
    expect(tabs.get_by_role("tab", name="Outputs")).to_have_attribute("aria-selected", "true")
    assert {p.name for p in outputs.iterdir()} == before

    # "Bridge into" lists the other finished runs (not the picked one); choose the second clip.
    page.locator("#fp-out-bridge-into input").click()
    options = page.get_by_role("option")
    expect(options.filter(has_text=second.stem)).to_have_count(1)
    expect(options.filter(has_text=first.stem)).to_have_count(0)
    options.filter(has_text=second.stem).click()
    expect(page.locator("#fp-out-bridge-into input")).to_have_value(re.compile(second.stem))
    page.locator("#fp-out-seconds input").fill("0.8")
    page.locator("#fp-out-bridge").click()
    expect(progress).to_contain_text("Done:", timeout=120_000)

    new = [p for p in outputs.glob("*.json") if p.name not in before]
    assert len(new) == 1
    record = json.loads(new[0].read_text())
    assert record["status"] == "finished" and record["bridges"] == [first.name, second.name]
    assert record["settings"]["prompt"] == "the first clip of a bridge"  # the Generate tab's prompt was empty
    tabs.get_by_role("tab", name="Outputs").click()
    expect(page.locator("#fp-out-table")).to_contain_text(new[0].stem, timeout=20_000)

    frames, a, b = (mp4_info(path)[1] for path in (new[0].with_suffix(".mp4"), first, second))
    assert frames.shape[0] == record["frames"] > len(a) + len(b)
    assert np.array_equal(frames[:len(a)], a) and np.array_equal(frames[-len(b):], b)
