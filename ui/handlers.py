"""What the page's buttons and the `/generate` API do, in plain Python (no gradio here).

`page_run` is a generator of `PageUpdate`s: the layout turns each into component values.
`api_run` is the same run, consumed to the end, returning the MP4's path.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framepack_core import Failed, Finished, GenerationRequest, Preview, SectionDone

from .outputs import new_run, save_inputs, write_settings
from .progress import RunProgress, idle_html
from .worker import Worker, WorkerBusy

KEEP = object()  # a PageUpdate field left as it is on the page
MODEL_DEFAULT_MODE = "model default"


@dataclass
class PageUpdate:
    progress: str = KEEP
    preview: object = KEEP  # uint8 image, or None to clear
    video: object = KEEP  # path of the video so far / finished, or None to clear
    download: object = KEEP  # path of the finished MP4, or None to hide the button
    summary: object = KEEP  # markdown of the settings and seed used
    seed: object = KEEP  # the seed actually used (written back when randomized)
    running: object = KEEP  # True: Start off, Stop on


@dataclass
class ServerSettings:
    """What the command line fixed: defaults for the page, and everything the API does not take."""
    model: str = "framepack"
    resolution: int = 640
    outputs: Path = Path("outputs")
    vram_budget_gb: float | None = None


def default_mode(model: str) -> str:
    from framepack_core.models import MODEL_SETS  # imported on first use: it pulls in diffusers

    return MODEL_SETS[model].default_mode if model in MODEL_SETS else "inverted"


def random_seed() -> int:
    return random.SystemRandom().randrange(0, 2**31)  # small enough to read and retype


class Handlers:
    def __init__(self, worker: Worker, settings: ServerSettings):
        self.worker = worker
        self.settings = settings

    def stop(self) -> None:
        self.worker.stop()

    def page_run(self, image, prompt, seconds, seed, randomize, steps, gs, step_cache, model, mode, end_image,
                 resolution, crf, vram_budget_gb):
        if randomize or seed is None:
            seed = random_seed()
        seed = _whole(seed)
        model = model or self.settings.model
        try:
            request, files = self._prepare(GenerationRequest(
                image=image, prompt=prompt or "", seconds=seconds, seed=seed, steps=_whole(steps), gs=gs,
                step_cache=bool(step_cache), mode=None if mode in (None, MODEL_DEFAULT_MODE) else mode,
                end_image=end_image, resolution=_whole(resolution), crf=_whole(crf)), model)
        except ValueError as error:
            yield PageUpdate(progress=idle_html(str(error), error=True), seed=seed, running=False)
            return
        try:
            job = self.worker.submit(request, model, files.video, float(vram_budget_gb) if vram_budget_gb else None)
        except WorkerBusy as error:
            self._record(request, model, files, None, Failed(str(error)))
            yield PageUpdate(progress=idle_html(str(error), error=True), seed=seed, running=False)
            return
        progress = RunProgress()
        yield PageUpdate(progress=progress.html(), preview=None, video=None, download=None, summary="",
                         seed=seed, running=True)
        finished = failed = None
        try:
            for batch in job.batches():
                update = PageUpdate()
                for event in batch:
                    progress.update(event)
                    if isinstance(event, Preview):
                        update.preview = contact_sheet(event.image, request.window)
                    elif isinstance(event, SectionDone):
                        update.video = str(event.video)
                    elif isinstance(event, Finished):
                        finished = event
                    elif isinstance(event, Failed):
                        failed = event
                if job.cancel.is_set():
                    progress.stopping()
                update.progress = progress.html()
                yield update
        finally:
            job.stop()  # a no-op after the end; ends the run when the browser went away mid-run
        record = self._record(request, model, files, finished, failed)
        video = None
        if finished is not None and finished.video is not None:
            video = str(finished.video)
        elif failed is not None and failed.partial_video is not None:
            video = str(failed.partial_video)  # what was made before the failure is still worth keeping
        yield PageUpdate(progress=progress.html(), video=video if video else KEEP, download=video,
                         summary=summary_markdown(record), running=False)

    def api_run(self, image, prompt, seconds=5.0, seed=None, steps=25) -> str:
        """One video with the server's model, resolution and defaults; the MP4's path."""
        request, files = self._prepare(GenerationRequest(
            image=image, prompt=prompt or "", seconds=seconds, steps=_whole(steps),
            seed=random_seed() if seed is None else _whole(seed), resolution=self.settings.resolution),
            self.settings.model)
        try:
            job = self.worker.submit(request, self.settings.model, files.video, self.settings.vram_budget_gb)
        except WorkerBusy as error:
            self._record(request, self.settings.model, files, None, Failed(str(error)))
            raise
        finished = failed = None
        try:
            for batch in job.batches():
                finished = next((e for e in batch if isinstance(e, Finished)), finished)
                failed = next((e for e in batch if isinstance(e, Failed)), failed)
        finally:
            job.stop()
        self._record(request, self.settings.model, files, finished, failed)
        if failed is not None:
            raise RuntimeError(failed.message)
        if finished is None or finished.video is None:
            raise RuntimeError("The run was stopped before the first section was done; no video was made.")
        return str(finished.video)

    def _prepare(self, request: GenerationRequest, model: str):
        """Validate, then write the cropped picture and a first settings record (a crash keeps them)."""
        request = request.validated(default_mode(model))
        files = new_run(self.settings.outputs, request.seed)
        save_inputs(files, request)
        write_settings(files, _base_record(request, model, files) | {"status": "running"})
        return request, files

    def _record(self, request, model, files, finished: Finished | None, failed: Failed | None) -> dict:
        record = _base_record(request, model, files)
        if failed is not None:
            record |= {"status": "failed", "error": failed.message, "video": None}
        elif finished is not None:
            record |= {"status": "stopped" if finished.stopped else "finished",
                       "video": files.video.name if finished.video else None,
                       "frames": finished.frames, "fps": finished.fps, "sections": finished.sections,
                       "width": finished.width, "height": finished.height,
                       "seconds_elapsed": round(finished.seconds_elapsed, 2),
                       "blocks_computed": finished.blocks_computed, "blocks_skipped": finished.blocks_skipped}
        write_settings(files, record)
        return record


def _base_record(request: GenerationRequest, model: str, files) -> dict:
    settings = request.settings_dict()
    settings.pop("image_name", None)
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": model, "input": files.picture.name,
            "end_frame": files.end_picture.name if request.end_image is not None else None,
            "video": files.video.name, "settings": settings}


def summary_markdown(record: dict) -> str:
    s = record["settings"]
    cache = "step cache on" if s.get("step_cache") else "step cache off"
    lines = [f"**Seed {s['seed']}** · {s['seconds']:g} s · {s['steps']} steps · distilled guidance {s['gs']:g} · "
             f"{cache} · {record['model']} ({s['mode']}) · resolution {s['resolution']} · CRF {s['crf']}"]
    if record.get("frames"):
        lines.append(f"{record['frames']} frames, {record['width']}×{record['height']}, "
                     f"{record['seconds_elapsed']:g} s to make · saved as `{record['video']}`")
        skipped, computed = record.get("blocks_skipped", 0), record.get("blocks_computed", 0)
        if skipped:
            lines.append(f"The step cache skipped {100 * skipped / (skipped + computed):.0f}% of the transformer work.")
    if record.get("status") == "failed":
        lines.append(f"Failed: {record['error']}")
    return "  \n".join(lines)


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
