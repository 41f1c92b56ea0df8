"""Two browser pages on one server, as people use it (issue 28): both see the same queue, a job added from the
command line (a fresh process) included, and the same "Work through the queue" switch; Start while the queue's
job runs is refused at once, naming the job, with a Stop that ends it, and writes nothing. One server for the
module (test_ui_browser's fixture).
"""
import re
import subprocess
import sys

from tests.browser.test_ui_browser import ROOT, drop_file, page, server, set_slider  # noqa: F401 (fixtures)

from playwright.sync_api import expect

TERMINAL_PROMPT = "added from the terminal"
FEW_SECONDS = 15_000  # "within a few seconds", with room for a loaded 2-core machine


def _tab(page, name: str):
    return page.locator("#fp-tabs").get_by_role("tab", name=name)


def _row(page, text: str):
    return page.locator("#fp-queue-table").get_by_role("row").filter(has_text=text)


def test_two_pages_one_queue_and_one_line_of_work(server, page):  # noqa: F811 (fixtures)
    url, outputs = server
    page.goto(url)
    other = page.context.new_page()  # a second page: its own gradio session
    other.goto(url)
    for p in (page, other):
        _tab(p, "Queue").click()
        expect(p.locator("#fp-queue-running input[type=checkbox]")).to_be_checked()

    # The shared switch: paused on one page shows paused on the other.
    page.locator("#fp-queue-running input[type=checkbox]").uncheck()
    expect(other.locator("#fp-queue-running input[type=checkbox]")).not_to_be_checked(timeout=FEW_SECONDS)

    # A job from the command line, in its own process: both lists show it.
    subprocess.run([sys.executable, "app.py", "queue", "add", "--outputs", str(outputs), "--model", "tiny",
                    "--resolution", "128", "--image", str(ROOT / "examples" / "hills.jpg"), "--prompt",
                    TERMINAL_PROMPT, "--seconds", "20", "--steps", "50"], cwd=ROOT, check=True, timeout=120)
    # Long enough (17 sections) that the Stop pressed below always lands while it runs; an idle machine
    # finished a 4 s job before it once.
    for p in (page, other):
        expect(_row(p, TERMINAL_PROMPT)).to_contain_text("queued", timeout=FEW_SECONDS)
    job = int(_row(page, TERMINAL_PROMPT).get_by_role("gridcell").first.inner_text())

    # The other page sets the queue going; this page's Start is refused at once while the job runs.
    other.locator("#fp-queue-running input[type=checkbox]").check()
    expect(page.locator("#fp-queue-running input[type=checkbox]")).to_be_checked(timeout=FEW_SECONDS)
    expect(_row(page, TERMINAL_PROMPT)).to_contain_text("running", timeout=60_000)
    records_before = sorted(p.name for p in outputs.glob("*.json"))
    _tab(page, "Generate").click()
    drop_file(page, page.locator("#fp-image").get_by_role("button", name=re.compile("Drop an image")),
              ROOT / "examples" / "hills.jpg", "image/jpeg")
    expect(page.locator("#fp-image img")).to_be_visible()
    set_slider(page, "fp-seconds", 1)
    start, stop, progress = page.locator("#fp-start"), page.locator("#fp-stop"), page.locator("#fp-progress")
    # The Generate tab says who holds the machine before anyone presses Start, and its Stop is on.
    expect(page.locator("#fp-machine")).to_contain_text(f"Queue job {job} (Queue tab) is making a video")
    expect(stop).to_be_enabled()
    start.click()
    expect(progress).to_contain_text(f"Queue job {job} (Queue tab) is making a video", timeout=FEW_SECONDS)
    expect(start).to_be_enabled()
    expect(stop).to_be_enabled()
    assert sorted(p.name for p in outputs.glob("*.json")) == records_before  # the refused Start wrote nothing
    assert len(list(outputs.glob("*.png"))) == len(records_before)

    stop.click()  # ends the queue's job, from the page that was refused
    expect(stop).to_be_disabled()
    expect(page.locator("#fp-machine")).to_have_text("", timeout=FEW_SECONDS)
    _tab(page, "Queue").click()
    for p in (page, other):
        expect(_row(p, TERMINAL_PROMPT)).to_contain_text("stopped", timeout=60_000)

    other.close()
