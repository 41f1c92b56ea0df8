"""What the page's buttons and the `/generate` API do, in plain Python (no gradio here).

`page_run` is a generator of `PageUpdate`s: the layout turns each into component values.
`api_run` is the same run, consumed to the end, returning the MP4's path.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from framepack_core.events import Failed, Preview, SectionDone, Status
from framepack_core.request import Request
from framepack_core.run import Run
from framepack_core.run.record import RunRecord
from framepack_core.settings import DEFAULTS, SETTINGS, SETTINGS_LIST, Setting, SettingKind

from .creative import chosen_loras, page_keyframes, parse_lora_text
from .progress import RunProgress, idle_html, stages_markdown
from .worker import Worker, WorkerBusy

if TYPE_CHECKING:  # the kinds of start bring the model library: imported when a button is pressed
    from framepack_core.starts import Start

KEEP = object()  # a PageUpdate field left as it is on the page


@dataclass
class PageUpdate:
    progress: str = KEEP
    preview: object = KEEP  # uint8 image, or None to clear
    video: object = KEEP  # path of the video so far / finished, or None to clear
    download: object = KEEP  # path of the finished MP4, or None to hide the button
    summary: object = KEEP  # markdown of the settings and seed used
    seed: object = KEEP  # the seed actually used (written back when randomized)
    running: object = KEEP  # True: Start off, Stop on
    stoppable: object = KEEP  # Stop on while Start stays on: a Start refused because something else runs
    refused: object = KEEP  # the sentence of a run refused before it started (the Outputs tab shows it in place)


def followed(submission, progress, shown: Callable[[object, PageUpdate], None]):
    """A submitted run's page updates until it has ended: its progress after each batch of events, plus what
    `shown(event, update)` puts in (a preview, the video so far). Leaving early (the browser went away) stops it."""
    try:
        for batch in submission.batches():
            update = PageUpdate()
            for event in batch:
                progress.update(event)
                shown(event, update)
            if submission.cancel.is_set():
                progress.stopping()
            update.progress = progress.html()
            yield update
    finally:
        submission.stop()  # a no-op after the end; ends the run when the browser went away mid-run
    submission.finished.wait()


def refused(message: str, **fields) -> PageUpdate:
    """The one update of a run that did not start: its sentence in red, Start on."""
    return PageUpdate(progress=idle_html(message, error=True), running=False, refused=message, **fields)


@dataclass
class ServerSettings:
    """What the command line fixed: defaults for the page, and everything the API does not take."""
    model: str = DEFAULTS["model"]
    resolution: int = DEFAULTS["resolution"]
    outputs: Path = DEFAULTS["folder"]
    lora_dir: Path | None = None  # the LoRA files the page and the API may use (by name, nothing else)
    import_folders: tuple[Path, ...] = ()  # beside the outputs folder, where an imported file's pictures may be


# The settings the page shows (the table's with a widget), and its form: those by name as
# Request.from_fields takes them, then the page's own: `randomize` (a fresh seed each run) and
# `keyframe_times` (the keyframe pictures' seconds, read with them into the request's keyframes).
PAGE_SETTINGS = tuple(setting for setting in SETTINGS_LIST if setting.widget is not None)
FORM_FIELDS = tuple(setting.name for setting in PAGE_SETTINGS) + ("randomize", "keyframe_times")


def page_id(request) -> str:
    """The browser page's own key (a gradio.Request's session): whose Resume and Extend act on which run."""
    return getattr(request, "session_hash", None) or ""


def random_seed() -> int:
    return random.SystemRandom().randrange(0, 2**31)  # small enough to read and retype


class Handlers:
    def __init__(self, worker: Worker, settings: ServerSettings):
        self.worker = worker
        self.settings = settings
        self.last_run: Run | None = None  # the newest run any page started
        self._page_runs: dict[str, Run] = {}  # by page (gradio's session): what its Resume and Extend act on

    def page_last(self, page: str = "") -> Run | None:
        """The last run the page `page` started (a page's session id; "" for callers without one)."""
        return self._page_runs.get(page)

    def machine_note(self, page: str = "") -> tuple[str, bool | None]:
        """(what makes a video now when it is not page `page`'s own run, "" else; whether its Stop should be on:
        True for another's run, which Stop ends; None while the page's own run is going: its run says).
        The Generate tab shows it, so nobody presses Start without knowing the machine is taken."""
        submission = self.worker.running()
        if submission is None:
            return "", False
        if submission.run is self.page_last(page):
            return "", None
        return (f"{submission.label} is making a video on this machine now. Start is refused until "
                "it ends: Add to queue to make yours after it, or press Stop to end it."), True

    def busy_refusal(self):
        """A PageUpdate saying what makes a video now (Stop on, to end it), or None when a run may start."""
        try:
            self.worker.check_free()
        except WorkerBusy as error:
            return refused(str(error), stoppable=True)
        return None

    def stop(self) -> None:
        self.worker.stop()

    def page_run(self, form: dict, page: str = ""):
        """Start pressed on page `page`: `form` holds the page's inputs by name (FORM_FIELDS)."""
        try:
            form = self.request_fields(form)
        except ValueError as error:
            yield refused(str(error))
            return
        yield from self.follow_start(
            lambda: starts().FromPicture(Request.from_fields(**form, folder=self.settings.outputs)), page,
            seed=form["seed"])

    def page_resume(self, page: str = ""):
        """Resume pressed: the last run of this page, if it was stopped or failed, from its last section. Only
        this page's: any other run (another page's, or one from before a restart) is the Outputs tab's Resume."""
        last = self.page_last(page)

        def resumed() -> Start:
            if last is None or last.status not in (Status.STOPPED, Status.FAILED):
                raise ValueError("There is no stopped or failed run of this page to resume; pick one in the "
                                 "Outputs tab and press Resume there.")
            return starts().Resume(last.files.record)
        yield from self.follow_start(resumed, page)

    def page_extend(self, upload, seconds, prompt, from_seconds=None, page: str = ""):
        """Extend pressed: the uploaded video, else this page's last finished one, `seconds` longer. With
        `from_seconds` (the Outputs tab's Branch here) the video is kept up to about that time and continued
        from there, into a new file."""
        source = upload or self._last_finished_video(page)

        def extended() -> Start:
            if not source:
                raise ValueError("Upload a video, or finish one here first, to extend it.")
            return starts().Extend(source, seconds, from_seconds=from_seconds, folder=self.settings.outputs,
                                   prompt=prompt or None)
        yield from self.follow_start(extended, page)

    def page_bridge(self, first, second, seconds, prompt, page: str = ""):
        """Bridge pressed (the Outputs tab, or Continue a video's): video `first` (None: this page's last
        finished one), about `seconds` leading from its last frame into video `second`'s first, then `second`,
        into a new run; with the prompt given, else `first`'s own."""
        first = first or self._last_finished_video(page)

        def bridged() -> Start:
            if not first:
                raise ValueError("Upload the video to bridge from, or finish one here first.")
            if not second:
                raise ValueError("Upload the video to bridge into.")
            return starts().Bridge(first, second, seconds, folder=self.settings.outputs, prompt=prompt or None)
        yield from self.follow_start(bridged, page)

    def _last_finished_video(self, page: str):
        last = self.page_last(page)
        return last.files.video if last is not None and last.status == Status.FINISHED else None

    def follow_start(self, make_start: Callable[[], Start], page: str = "", seed=None):
        """The run the start `make_start()` names, begun and followed: every page's button ends here. Its
        ValueError (bad input, nothing written) is one sentence (with the seed the form chose, if any)."""
        busy = self.busy_refusal()  # before anything is written: a refused Start leaves no files
        if busy is not None:
            yield busy
            return
        try:
            run = starts().begin(make_start())
        except ValueError as error:
            yield refused(str(error), **({} if seed is None else {"seed": seed}))
            return
        try:
            submission = self.worker.submit(run)
        except WorkerBusy as error:  # the queue took the machine since busy_refusal looked
            run.discard(str(error))
            yield refused(str(error), seed=run.request.method.seed, stoppable=True)
            return
        yield from self._follow(run, submission, page)

    def _follow(self, run: Run, submission, page: str = ""):
        """The submitted run's events as page updates until it ends."""
        seed = run.request.method.seed
        self.last_run = self._page_runs[page] = run
        progress = RunProgress()
        yield PageUpdate(progress=progress.html(), preview=None, video=None, download=None, summary="",
                         seed=seed, running=True)
        def shown(event, update: PageUpdate) -> None:
            if isinstance(event, Preview):
                update.preview = contact_sheet(event.image, run.request.method.window)
            elif isinstance(event, SectionDone):
                update.video = str(event.video)

        yield from followed(submission, progress, shown)
        record = run.record()
        video = None
        if record.status != Status.FAILED and record.video:
            video = str(run.files.video)
        elif record.partial_video:
            video = str(run.files.in_progress)  # what was made before the failure is still worth keeping
        yield PageUpdate(progress=progress.html(), video=video if video else KEEP, download=video,
                         summary=summary_markdown(record), running=False)

    def request_fields(self, form: dict) -> dict:
        """The page's form as Request.from_fields names (a fresh seed if asked; the server's model by default;
        the LoRA table's rows as files of the LoRA folder). ValueError for a LoRA outside it."""
        form = dict(form)
        randomize, times = form.pop("randomize", False), form.pop("keyframe_times", "")
        values = {name: self._page_value(SETTINGS[name], value) for name, value in form.items()}
        values["seed"] = _whole(random_seed() if randomize or form.get("seed") is None else form["seed"])
        values["model"] = values.get("model") or self.settings.model
        values["keyframes"] = page_keyframes(form.get("keyframes"), times)
        return values

    def _page_value(self, setting: Setting, value):
        """A widget's value as the request takes it: sliders send whole floats, "auto" stands for None."""
        if setting.optional and (value is None or (setting.widget is not None and value == setting.widget.auto)):
            return None
        if value is None:
            return setting.default
        if setting.kind == SettingKind.LORAS:
            return chosen_loras(value, self.settings.lora_dir)
        if setting.kind == SettingKind.BOOL:
            return bool(value)
        return _whole(value) if setting.kind == SettingKind.INT else value

    def api_run(self, image, prompt, seconds=DEFAULTS["seconds"], seed=None, steps=DEFAULTS["steps"], loras="",
                prompt_blend=DEFAULTS["prompt_blend"], keyframes=None, keyframe_times="",
                loop=DEFAULTS["loop"]) -> str:
        """One video with the server's model, resolution and defaults; the MP4's path.

        `loras`: "name.safetensors:0.8; other.safetensors", names of files in the server's LoRA folder."""
        self.worker.check_free()
        run = starts().begin(starts().FromPicture(Request.from_fields(
            image=image, model=self.settings.model, prompt=prompt or "", seconds=seconds, steps=steps,
            seed=random_seed() if seed is None else seed, resolution=self.settings.resolution,
            folder=self.settings.outputs, loras=parse_lora_text(loras, self.settings.lora_dir),
            prompt_blend=_whole(prompt_blend or 0), keyframes=page_keyframes(keyframes, keyframe_times),
            loop=bool(loop))))
        try:
            submission = self.worker.submit(run)
        except WorkerBusy as error:  # the queue took the worker just now
            run.discard(str(error))
            raise
        try:
            for _ in submission.batches():
                pass
        finally:
            submission.stop()
        submission.finished.wait()
        outcome = run.outcome
        if isinstance(outcome, Failed):
            raise RuntimeError(outcome.message)
        if outcome is None or outcome.video is None:
            raise RuntimeError("The run was stopped before the first section was done; no video was made.")
        return str(outcome.video)


def starts():
    """framepack_core.starts, imported when first used: it brings the model library, which the page's server
    loads only with the first browser or run."""
    from framepack_core import starts

    return starts


def summary_markdown(record: RunRecord) -> str:
    s = record.settings  # by the settings table's names
    cache = "step cache on" if s.get("step_cache") else "step cache off"
    lines = [f"**Seed {s['seed']}** · {s['seconds']:g} s · {s['steps']} steps · distilled guidance {s['gs']:g} · "
             f"{cache} · {record.model} ({s['mode']}) · resolution {s['resolution']} · CRF {s['crf']}"]
    if record.frames:
        lines.append(f"{record.frames} frames, {record.width}×{record.height}, "
                     f"{record.seconds_elapsed:g} s to make · saved as `{record.video}`")
        cache = record.step_cache
        skipped, computed = (cache.blocks_skipped, cache.blocks_computed) if cache is not None else (0, 0)
        if skipped:
            lines.append(f"The step cache skipped {100 * skipped / (skipped + computed):.0f}% of the transformer work.")
    if record.status == Status.FAILED:
        lines.append(f"Failed: {record.error}")
    stages = stages_markdown(record.stages)  # a table: markdown wants it after a blank line
    return "  \n".join(lines) + (f"\n\n{stages}" if stages else "")


def contact_sheet(strip: np.ndarray, frames: int, gap: int = 1) -> np.ndarray:
    """The preview's frames, side by side in one long strip, laid out in a near-square grid instead.

    A 9-frame strip is 15 times wider than high and would show as a thin line on the page.
    """
    height, width, _ = strip.shape
    if frames < 2 or width % frames:
        return strip
    w = width // frames
    cols = math.ceil(math.sqrt(frames))
    rows = math.ceil(frames / cols)
    sheet = np.full((rows * height + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i in range(frames):
        r, c = divmod(i, cols)
        sheet[r * (height + gap):r * (height + gap) + height, c * (w + gap):c * (w + gap) + w] = \
            strip[:, i * w:(i + 1) * w]
    return sheet


def _whole(value):
    """Sliders and number boxes send floats; whole floats become ints, the rest is left to validation."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
