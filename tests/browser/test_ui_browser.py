"""The page in a real browser: Debian's Chromium, headless, driven by Playwright as a person would.

Drop a picture, type a prompt, Start, watch the preview and progress, Stop mid-run, start again,
wait for the video, download it and count its frames. Takes a screenshot (see `screenshot`).
Then the Queue tab: add two jobs, move one up, cancel the other, watch the first run to its video,
and read the queue's store to see that it agrees with what the page showed.
"""
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.mp4info import mp4_info

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _needs(what: str):
    # CI installs both (.ci/run); elsewhere the test is skipped rather than failed.
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing; .ci/run should have installed it")
    pytest.skip(f"{what} is not installed", allow_module_level=True)


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    _needs("the playwright Python package")
if not Path(CHROMIUM).exists():
    _needs(f"Chromium ({CHROMIUM}; Debian package 'chromium')")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outputs = tmp_path_factory.mktemp("outputs")
    log = tmp_path_factory.mktemp("server") / "server.log"
    # The real command line a user types; FRAMEPACK_CACHE comes from tests/conftest.py.
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "app.py", "--model", "tiny", "--resolution", "128",
                                    "--port", str(port), "--outputs", str(outputs)], cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240  # a hang guard: on a busy machine the page takes a while to come up
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the server did not start within 240 s")
    yield url, outputs
    process.terminate()
    assert process.wait(60) == 0, log.read_text()  # a hang guard; a busy machine is slow to close a page
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def page():
    profile = tempfile.mkdtemp(prefix="framepack-chromium-")  # a fresh profile every time
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
                viewport={"width": 1280, "height": 960})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def drop_file(page, target, path: Path, mime: str) -> None:
    """A file dragged from the desktop and dropped on `target`."""
    transfer = page.evaluate_handle(
        """([data, name, type]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type }));
            return transfer;
        }""", [base64.b64encode(path.read_bytes()).decode(), path.name, mime])
    for event in ("dragenter", "dragover", "drop"):
        target.dispatch_event(event, {"dataTransfer": transfer})


def set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value))


def test_a_person_makes_a_video(server, page, tmp_path):
    url, outputs = server
    outside = []
    page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
            or r.url.startswith("blob:") else outside.append(r.url))
    page.goto(url)
    start, stop = page.locator("#fp-start"), page.locator("#fp-stop")
    progress = page.locator("#fp-progress")
    expect(start).to_be_enabled()
    expect(stop).to_be_disabled()

    drop_zone = page.locator("#fp-image").get_by_role("button", name=re.compile("Drop an image"))
    drop_file(page, drop_zone, ROOT / "examples" / "hills.jpg", "image/jpeg")
    expect(page.locator("#fp-image img")).to_be_visible()
    page.locator("#fp-prompt textarea").press_sequentially("The sun sets slowly behind the hills")

    # First run: three sections; Stop once the first section's video is on the page.
    set_slider(page, "fp-seconds", 4)
    set_slider(page, "fp-steps", 12)
    start.click()
    expect(stop).to_be_enabled()
    expect(progress).to_contain_text(re.compile(r"Step \d+ of 12"), timeout=60_000)
    expect(page.locator("#fp-preview img")).to_be_visible()
    first_progress = progress.inner_text()
    expect(page.locator("#fp-video video")).to_be_visible(timeout=60_000)
    assert progress.inner_text() != first_progress  # the progress moves
    stop.click()
    expect(progress).to_contain_text("Stopped; the video so far is kept", timeout=30_000)
    expect(page.locator("#fp-download")).to_be_visible()
    expect(start).to_be_enabled()
    expect(stop).to_be_disabled()

    # Second run: one second, which is one section of 37 frames.
    set_slider(page, "fp-seconds", 1)
    set_slider(page, "fp-steps", 4)
    start.click()
    expect(progress).to_contain_text("Done: 37 frames", timeout=90_000)
    download_button = page.locator("#fp-download")
    expect(download_button).to_be_visible()
    expect(page.locator("#fp-video video")).to_be_visible()
    expect(page.locator("#fp-summary")).to_contain_text("Seed 31337")
    with page.expect_download() as download_info:
        download_button.click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    _, frames = mp4_info(saved)
    assert frames.shape[0] == 37

    # Both runs left their picture, video and settings in the outputs folder.
    assert len(list(outputs.glob("*.mp4"))) == 2 and len(list(outputs.glob("*.png"))) == 2
    assert len(list(outputs.glob("*.json"))) == 2
    assert outside == [], f"the page reached outside the app: {outside}"

    assert screenshot(page, tmp_path).stat().st_size > 0


def screenshot(page, folder: Path) -> Path:
    """The whole page as a PNG in `folder`; also as the README's picture, docs/screenshot.png, when
    FRAMEPACK_SCREENSHOT=1 (so a test run never changes a tracked file unasked)."""
    page.mouse.move(0, 0)  # no hover highlight in the picture
    page.wait_for_timeout(300)
    path = Path(folder) / "screenshot.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("FRAMEPACK_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "docs" / "screenshot.png")
    return path


def test_a_person_works_the_queue_tab(server, page):
    from jobs.store import JobStore

    url, outputs = server
    page.goto(url)
    tabs = page.locator("#fp-tabs")
    generate, queue = tabs.get_by_role("tab", name="Generate"), tabs.get_by_role("tab", name="Queue")
    message, table = page.locator("#fp-queue-message"), page.locator("#fp-queue-table")
    working = page.locator("#fp-queue-running input[type=checkbox]")
    queue.click()
    expect(working).to_be_checked()
    working.uncheck()  # paused, so that the jobs wait while they are arranged
    generate.click()

    drop_zone = page.locator("#fp-image").get_by_role("button", name=re.compile("Drop an image"))
    drop_file(page, drop_zone, ROOT / "examples" / "hills.jpg", "image/jpeg")
    expect(page.locator("#fp-image img")).to_be_visible()
    set_slider(page, "fp-seconds", 1)
    set_slider(page, "fp-steps", 2)
    prompt = page.locator("#fp-prompt textarea")
    ids = []
    for text in ("A kite rises over the hills", "A balloon drifts away"):
        generate.click()
        prompt.fill(text)
        page.locator("#fp-add-queue").click()
        queue.click()
        expect(message).to_have_text(re.compile(r"Queued as job \d+, number \d in line") if not ids else
                                     re.compile(rf"Queued as job (?!{ids[-1]},)\d+, number \d in line"))
        ids.append(int(re.search(r"job (\d+)", message.inner_text()).group(1)))
    kite, balloon = ids
    row = lambda text: table.get_by_role("row").filter(has_text=text)  # gradio's grid rows, as read aloud
    expect(row("A balloon drifts away")).to_contain_text("queued")

    row("A balloon drifts away").get_by_role("gridcell").first.click()  # picks the job, as its number shows
    expect(page.locator("#fp-queue-job input")).to_have_value(str(balloon))
    page.locator("#fp-queue-up").click()
    expect(message).to_contain_text(f"Job {balloon}: up done.")
    expect(table.get_by_role("row").nth(1)).to_contain_text("A balloon drifts away")  # row 0: the headings

    row("A kite rises over the hills").get_by_role("gridcell").first.click()
    expect(page.locator("#fp-queue-job input")).to_have_value(str(kite))
    page.locator("#fp-queue-cancel").click()
    expect(message).to_contain_text(f"Job {kite}: cancel done.")
    expect(row("A kite rises over the hills")).to_contain_text("stopped")

    working.check()  # back to work: the balloon runs, on this page's worker
    expect(page.locator("#fp-queue-live-video video")).to_be_visible(timeout=120_000)
    expect(row("A balloon drifts away")).to_contain_text("finished", timeout=120_000)
    row("A balloon drifts away").get_by_role("gridcell").first.click()
    picked = page.locator("#fp-queue-video video")
    expect(picked).to_be_visible()

    jobs = {job.id: job for job in JobStore(outputs).jobs()}
    done, cancelled = jobs[balloon], jobs[kite]
    assert list(jobs) == [balloon, kite]  # the order the page set
    assert (done.status, done.attempts, done.finishes, done.settings["prompt"]) == (
        "finished", 1, 1, "A balloon drifts away")
    assert (cancelled.status, cancelled.message, cancelled.attempts, cancelled.video) == ("stopped", "cancelled", 0, None)
    assert done.video in (picked.get_attribute("src") or "")  # the page plays the store's video
    assert mp4_info(outputs / done.video)[1].shape[0] == 37  # one second: one section
