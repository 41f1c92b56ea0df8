"""Upscale and Interpolate on the page: actions of the Outputs tab on the picked run's finished video.

The run is a FinishingRun (framepack_core.finishing), the one the command line and the queue make; it goes to
the page's worker like any run (one at a time, Stop ends it after the current frame) and is shown in the
Generate tab's run display: progress (frames done of the total, time left), the video so far after each
part, the finished MP4 to download, and what was applied.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from framepack_core.events import SectionDone, Status
from framepack_core.run.record import FinishingRecord

from .handlers import KEEP, PageUpdate, followed
from .progress import RunProgress, idle_html
from .worker import WorkerBusy

UPSCALERS = Path("upscalers")  # as the command line's --upscalers-dir default
RIFE = Path("rife")
DEFAULT_MODEL = "default for the scale"


class FinishHandlers:
    def __init__(self, outputs, upscalers: Path = UPSCALERS, rife_folder: Path = RIFE):
        self.outputs, self.upscalers, self.rife_folder = outputs, Path(upscalers), Path(rife_folder)

    def model_choices(self) -> list[str]:
        from framepack_core.finishing.upscalers import choices

        return [DEFAULT_MODEL, *choices(self.upscalers)]

    def finish(self, name, operation: str, factor, model=None):
        """Upscale or Interpolate pressed: a new run from the picked run's finished video, followed."""
        from framepack_core.failures import ModelsUnavailableError
        from framepack_core.finishing.finishing_run import FinishingRun
        from framepack_core.finishing.placement import device_and_budget
        from framepack_core.finishing.request import FinishRequest

        busy = self.outputs.handlers.busy_refusal()  # one line of work: refused before anything is written
        if busy is not None:
            yield busy
            return
        try:
            video = self.outputs.finished_video(name, operation)
            request = FinishRequest(operation, video, int(factor), model=None if model in (None, "", DEFAULT_MODEL)
                                    else model, folder=self.outputs.folder, upscalers=self.upscalers,
                                    rife_folder=self.rife_folder)
            budget = self.outputs.handlers.worker.config.vram_budget_gb
            run = FinishingRun.start(request, *device_and_budget(budget))
        except (ValueError, ModelsUnavailableError) as error:
            yield PageUpdate(progress=idle_html(str(error), error=True), running=False)
            return
        yield from self.follow(run)

    def follow(self, run):
        yield from follow_finishing(self.outputs.handlers, run)


def resume_finishing(handlers, path):
    """Resume pressed on a finishing run (the Outputs tab's):
    continued after its last whole part, followed as a new one is; one red line when it cannot be."""
    from framepack_core.failures import ModelsUnavailableError
    from framepack_core.finishing.finishing_run import FinishingRun
    from framepack_core.finishing.placement import device_and_budget

    busy = handlers.busy_refusal()
    if busy is not None:
        yield busy
        return
    try:
        run = FinishingRun.resume(path, *device_and_budget(handlers.worker.config.vram_budget_gb))
    except (ValueError, ModelsUnavailableError) as error:
        yield PageUpdate(progress=idle_html(str(error), error=True), running=False)
        return
    yield from follow_finishing(handlers, run)


def follow_finishing(handlers, run):
    """The run on the page's worker, its events as page updates (frames done of the total) until it ends."""
    try:
        submission = handlers.worker.submit(run)
    except WorkerBusy as error:
        run.refuse(str(error))
        yield PageUpdate(progress=idle_html(str(error), error=True), running=False)
        return
    handlers.last_run = None  # not a generation: nothing for the Generate tab's Resume or Extend
    progress = RunProgress(frames=True)
    yield PageUpdate(progress=progress.html(), preview=None, video=None, download=None, summary="", running=True)
    def shown(event, update: PageUpdate) -> None:
        if isinstance(event, SectionDone):  # a whole part, joined: the video so far
            update.video = str(event.video)

    yield from followed(submission, progress, shown)
    record = run.record()
    video = str(run.files.video) if record.status == Status.FINISHED else None
    yield PageUpdate(progress=progress.html(), video=video or KEEP, download=video,
                     summary=summary(record), running=False)


def summary(record: FinishingRecord) -> str:
    """What the finishing run made and applied, as markdown."""
    applied = record.applied or {}  # what the method says of itself (methods.py's `described`)
    lines = [f"**{record.operation} x{applied.get('factor')}** of `{Path(record.source).name}`: "
             f"{record.status}", f"- method: {applied.get('method')}"]
    if applied.get("model_file"):
        lines.append(f"- model: `{applied['model_file']}` (SHA-256 `{applied['model_sha256'][:16]}…`)")
    if record.status == Status.FINISHED:
        lines.append(f"- {record.frames} frames, {record.width}x{record.height}, {record.fps:g} fps")
    elif record.error:
        lines.append(f"- {record.error}")
    return "\n".join(lines)


def finish_controls(finishing: FinishHandlers) -> SimpleNamespace:
    """The Upscale and Interpolate controls, placed where they are called (inside the Outputs tab's layout)."""
    import gradio as gr

    with gr.Row():
        scale = gr.Dropdown([2, 4], value=2, label="Upscale x", min_width=80, elem_id="fp-out-scale")
        model = gr.Dropdown(finishing.model_choices(), value=DEFAULT_MODEL, label="Upscaler (upscalers/ folder)",
                            min_width=160, elem_id="fp-out-upscaler")
        upscale = gr.Button("Upscale", size="sm", elem_id="fp-out-upscale")
    with gr.Row():
        factor = gr.Dropdown([2, 4], value=2, label="Frame rate x", min_width=80, elem_id="fp-out-factor")
        interpolate = gr.Button("Interpolate", size="sm", elem_id="fp-out-interpolate")
    return SimpleNamespace(scale=scale, model=model, upscale=upscale, factor=factor, interpolate=interpolate)


def wire_finish(finishing: FinishHandlers, controls: SimpleNamespace, picked, tabs, run_outputs: list, to_outputs,
                generate_tab: str) -> None:
    """Both buttons run on the Generate tab's run display, as Resume and Extend do."""
    import gradio as gr

    def follow(updates):
        yield {tabs: gr.Tabs(selected=generate_tab)}
        for update in updates:
            yield dict(zip(run_outputs, to_outputs(update)))

    def upscale(name, scale, model):
        yield from follow(finishing.finish(name, "upscale", scale, model))

    def interpolate(name, factor):
        yield from follow(finishing.finish(name, "interpolate", factor))

    running = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")  # refused at once when busy
    controls.upscale.click(upscale, [picked, controls.scale, controls.model], [tabs, *run_outputs], **running)
    controls.interpolate.click(interpolate, [picked, controls.factor], [tabs, *run_outputs], **running)
    controls.model.focus(lambda: gr.Dropdown(choices=finishing.model_choices()), None, controls.model,
                         queue=False, api_visibility="private", show_progress="hidden")
