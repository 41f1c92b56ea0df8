"""The page, declared in one function: inputs on the left, the growing video on the right."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from framepack_core.settings import (DEFAULTS, MODEL_SETS, PUBLISHED_MODEL_SETS, SETTINGS, Setting, SettingKind,
                                     WidgetKind)

from .creative import keyframe_timeline_html, lora_rows, timeline_html
from .handlers import FORM_FIELDS, KEEP, PAGE_SETTINGS, Handlers, PageUpdate, page_id
from .outputs import OutputsHandlers
from .outputs_tab import build_outputs_tab
from .progress import idle_html
from .queue_tab import build_queue_tab

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_PROMPTS = [
    "The sun sets slowly behind the hills while clouds drift across the sky.",
    "The person smiles, turns their head and waves at the camera.",
    "The camera slowly pushes in as the leaves sway in a gentle wind.",
    "The cat stretches, yawns and curls up to sleep.",
]
GENERATE_TAB = "generate"  # the tab's id: Remake and Resume in the Outputs tab switch to it
MODEL_HELP = SETTINGS["model"].widget.options["choice_labels"]

# System and bundled fonts only: the page must not reach out to font services (offline desktops).
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Consolas", "monospace"])
CSS = (Path(__file__).with_name("page.css")).read_text(encoding="utf-8")


def build_page(handlers: Handlers, model_choices: tuple[str, ...] = MODEL_SETS, queue=None) -> gr.Blocks:
    """`queue`: the page's QueueHandlers (ui/queue_tab.py); None leaves the queue off the page."""
    s = handlers.settings
    with gr.Blocks(title="FramePack", analytics_enabled=False) as page:
        header = gr.HTML(_header(s.model, ""), elem_id="fp-header")
        # The device badge is filled in when a browser loads the page: finding the device imports torch,
        # which the server need not wait for before it starts listening.
        page.load(lambda: _header(s.model, handlers.worker.session.device.type.upper()), None, header,
                  api_visibility="private", show_progress="hidden")
        with gr.Tabs(elem_id="fp-tabs") as tabs:
            with gr.Tab("Generate", id=GENERATE_TAB, elem_id="fp-generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=340):
                        form, parts = _inputs(handlers, model_choices, queue is not None)
                    with gr.Column(scale=6, min_width=380):
                        parts |= _results()
                parts["machine_timer"] = gr.Timer(2.0)  # inside the tab: any other child of gr.Tabs shows as a tab
        with tabs:  # Generate, Queue, Outputs
            if queue is not None:
                build_queue_tab(queue, form, parts["add_queue"], parts["progress"])
            build_outputs_tab(OutputsHandlers(handlers), form, _run_outputs(form, parts), _to_outputs, tabs,
                              GENERATE_TAB)
        _wire_helpers(page, form, parts, s.lora_dir)
        _wire_runs(handlers, form, parts)
        _api(handlers, form["prompt"])
    return page


def _inputs(handlers: Handlers, model_choices, with_queue: bool) -> tuple[dict, dict]:
    """The left column: the settings table's widgets in their groups (`form`, by setting name, in FORM_FIELDS'
    order) and the page's own components (`parts`: buttons, the timeline, the memory plan...)."""
    s, form, parts = handlers.settings, {}, {}
    # What the server's flags chose instead of the table's defaults.
    values = {"model": s.model, "resolution": s.resolution,
              "vram_budget_gb": handlers.worker.config.vram_budget_gb}

    def picture_examples():
        if EXAMPLES_DIR.joinpath("hills.jpg").is_file():
            gr.Examples([[str(EXAMPLES_DIR / "hills.jpg")]], inputs=[form["image"]], label="Example picture")

    after = {  # what the page adds beside a setting's widget
        "image": picture_examples,
        "seed": lambda: form.update(randomize=gr.Checkbox(False, label="New random seed each run",
                                                          elem_id="fp-randomize")),
        "vram_budget_gb": lambda: parts.update(memory_plan=gr.Markdown("", elem_id="fp-memory-plan")),
        "loras": lambda: parts.update(refresh=gr.Button("Look for LoRA files again", size="sm")),
        "keyframes": lambda: form.update(keyframe_times=gr.Textbox(
            label="Keyframe times (seconds, one per picture; :weight 0..1 optional)", placeholder="1.2, 3:0.5",
            elem_id="fp-keyframe-times")),
        "loop": lambda: parts.update(keyframe_timeline=gr.HTML("", elem_id="fp-keyframe-timeline")),
    }
    place = _Placer(form, values, after, model_choices, s.lora_dir)
    place("start")
    parts["timeline"] = gr.HTML(timeline_html("", DEFAULTS["seconds"]), elem_id="fp-timeline")
    with gr.Row():
        parts["start"] = gr.Button("Start", variant="primary", size="lg", elem_id="fp-start", scale=3)
        parts["stop"] = gr.Button("Stop", variant="stop", size="lg", interactive=False, elem_id="fp-stop", scale=1)
        parts["add_queue"] = gr.Button("Add to queue", size="lg", elem_id="fp-add-queue", scale=1,
                                       visible=with_queue)
    # This page's own stopped run (others' are resumed from the Outputs tab).
    parts["resume"] = gr.Button("Resume the run stopped here", size="sm", elem_id="fp-resume")
    gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[form["prompt"]], label="Example prompts")
    with gr.Accordion("Continue a video", open=False, elem_classes="fp-settings"):
        parts["source_video"] = gr.Video(label="Video to extend (optional: else the last finished one)",
                                         sources=["upload"], height=200, elem_id="fp-source-video")
        parts["extend_seconds"] = gr.Slider(1, 60, value=2, step=0.5, label="Seconds to add",
                                            elem_id="fp-extend-seconds")
        parts["bridge_into"] = gr.Video(label="Bridge into this video (optional): Bridge makes the seconds that lead "
                                              "from the video above (else the last finished one) into this one",
                                        sources=["upload"], height=200, elem_id="fp-bridge-into")
        with gr.Row():  # Extend beside Bridge: both act on the video above (the Outputs tab has its own)
            parts["extend"] = gr.Button("Extend it", size="sm", elem_id="fp-extend")
            parts["bridge"] = gr.Button("Bridge", size="sm", elem_id="fp-bridge")
    for group, title, open_, elem_id in _ACCORDIONS:
        with gr.Accordion(title, open=open_, elem_classes="fp-settings", elem_id=elem_id):
            place(group)
    return {name: form[name] for name in FORM_FIELDS}, parts  # a KeyError here: a group no accordion places


def _results() -> dict:
    """The right column: progress, the live preview, the video, its download and the summary."""
    return dict(
        machine=gr.Markdown("", elem_id="fp-machine"),  # what else makes a video now (a queue job, another page)
        progress=gr.HTML(idle_html(), elem_id="fp-progress"),
        preview=gr.Image(label="Current section (live preview)", interactive=False, height=230,
                         elem_id="fp-preview", buttons=[], format="png"),
        video=gr.Video(label="Video", interactive=False, autoplay=True, loop=True, height=380, elem_id="fp-video"),
        download=gr.DownloadButton("Download MP4", visible=False, variant="primary", elem_id="fp-download"),
        summary=gr.Markdown("", elem_id="fp-summary"))


def _run_outputs(form: dict, parts: dict) -> list:
    """Where a run shows itself, in the order `_to_outputs` gives a PageUpdate's values."""
    outputs = [parts[name] for name in ("progress", "preview", "video", "download", "summary")]
    return outputs + [form["seed"], parts["start"], parts["stop"]]


def _wire_helpers(page: gr.Blocks, form: dict, parts: dict, lora_dir) -> None:
    """What follows the typing without a run: the timeline, the LoRA list, the memory plan (pure Python, no queue)."""
    prompt, seconds, timeline = form["prompt"], form["seconds"], parts["timeline"]
    for source in (prompt, seconds):
        source.change(timeline_html, [prompt, seconds], timeline, queue=False, show_progress="hidden",
                      api_visibility="private")
    parts["refresh"].click(lambda: lora_rows(lora_dir), None, form["loras"], queue=False, api_visibility="private")
    plan_inputs = [form["model"], form["vram_budget_gb"], form["resolution"]]
    for control in plan_inputs:
        control.change(memory_plan_line, plan_inputs, [parts["memory_plan"]], queue=False,
                       show_progress="hidden", api_visibility="private")
    page.load(memory_plan_line, plan_inputs, [parts["memory_plan"]], queue=False, show_progress="hidden",
              api_visibility="private")
    keyframe_inputs = [form["keyframes"], form["keyframe_times"], seconds, form["loop"]]
    for source in keyframe_inputs:  # which sections each keyframe conditions
        source.change(keyframe_timeline_html, keyframe_inputs, parts["keyframe_timeline"], queue=False,
                      show_progress="hidden", api_visibility="private")


def _wire_runs(handlers: Handlers, form: dict, parts: dict) -> None:
    """Start, Stop, Resume and Extend: each run's updates go to the same outputs."""
    outputs = _run_outputs(form, parts)

    # Each page's runs as their own events, not one line of gradio's: a Start while something runs is refused at
    # once (the worker makes one video at a time) instead of waiting unseen in gradio's queue.
    running = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")

    def run(values: dict, request: gr.Request):  # gradio hands a set of inputs over as one dict, keyed by component
        form_values = {name: values[component] for name, component in form.items()}
        for update in handlers.page_run(form_values, page=page_id(request)):
            yield _to_outputs(update)

    def resume_run(request: gr.Request):
        for update in handlers.page_resume(page=page_id(request)):
            yield _to_outputs(update)

    def extend_run(upload, seconds, text, request: gr.Request):
        for update in handlers.page_extend(upload, seconds, text, page=page_id(request)):
            yield _to_outputs(update)

    parts["start"].click(run, set(form.values()), outputs, **running)
    parts["stop"].click(_stopping(handlers), None, [parts["stop"]], queue=False, show_progress="hidden",
                        api_visibility="private")
    parts["resume"].click(resume_run, None, outputs, **running)
    parts["extend"].click(extend_run, [parts["source_video"], parts["extend_seconds"], form["prompt"]], outputs,
                          **running)

    def bridge_run(first, second, seconds, text, request: gr.Request):
        for update in handlers.page_bridge(first, second, seconds, text, page=page_id(request)):
            yield _to_outputs(update)

    parts["bridge"].click(bridge_run, [parts["source_video"], parts["bridge_into"], parts["extend_seconds"],
                                       form["prompt"]], outputs, **running)
    _wire_machine_note(handlers, parts)


def _wire_machine_note(handlers: Handlers, parts: dict) -> None:
    """The Generate tab says when another run (a queue job, another page's) holds the machine, with Stop on to end
    it; sent only when it changes for this page (its own gr.State)."""
    shown = gr.State(None)

    def note(last, request: gr.Request):
        text, stop = handlers.machine_note(page_id(request))
        if (text, stop) == last:
            return gr.skip(), gr.skip(), last
        return text, gr.skip() if stop is None else gr.update(interactive=stop), (text, stop)

    parts["machine_timer"].tick(note, shown, [parts["machine"], parts["stop"], shown], queue=False,
                                show_progress="hidden", api_visibility="private")


def _api(handlers: Handlers, prompt) -> None:
    """The API: a button nobody sees, whose click is the named endpoint (gradio_client's /generate)."""
    api_trigger = gr.Button(visible=False)
    api_result = gr.File(visible=False, label="MP4")
    # A file, not an Image: the picture is opened by the app's own loader, whose message for a broken
    # file is one sentence, where gradio's preprocessing would answer "Could not preprocess input ...".
    api_image = gr.File(visible=False, type="filepath", label="image")
    # Numbers without the sliders' bounds or rounding: gradio's own checks would answer 0 or "abc" with a
    # message that names no field (or a traceback); the request's validator says what is wrong instead.
    api_seconds = gr.Number(DEFAULTS["seconds"], visible=False, label="seconds")
    api_seed = gr.Number(DEFAULTS["seed"], visible=False, label="seed")
    api_steps = gr.Number(DEFAULTS["steps"], visible=False, label="steps")
    api_loras = gr.Textbox("", visible=False, label="loras")
    api_blend = gr.Number(DEFAULTS["prompt_blend"], visible=False, label="prompt_blend")
    api_keyframes = gr.File(visible=False, type="filepath", file_count="multiple", label="keyframes")
    api_keyframe_times = gr.Textbox("", visible=False, label="keyframe_times")
    api_loop = gr.Checkbox(DEFAULTS["loop"], visible=False, label="loop")

    def generate(image, prompt, seconds=DEFAULTS["seconds"], seed=DEFAULTS["seed"], steps=DEFAULTS["steps"],
                 loras="", prompt_blend=DEFAULTS["prompt_blend"], keyframes=None, keyframe_times="",
                 loop=DEFAULTS["loop"]):
        """Make a video from a picture and a prompt ('[0s: ...] [2s: ...]' for a prompt per moment); returns
        the MP4 (model and resolution: the server's). loras: 'name.safetensors:0.8; other.safetensors' from
        the server's LoRA folder. keyframes: pictures the video passes through, keyframe_times: their seconds in
        order ('1.2, 3:0.5', weight after the colon); loop: end on the start picture."""
        try:
            return handlers.api_run(image, prompt, seconds, seed, steps, loras, prompt_blend, keyframes,
                                    keyframe_times, loop)
        except (ValueError, RuntimeError) as error:
            raise gr.Error(str(error)) from None

    api_trigger.click(generate, [api_image, prompt, api_seconds, api_seed, api_steps, api_loras, api_blend,
                                 api_keyframes, api_keyframe_times, api_loop],
                      api_result, api_name="generate", concurrency_id="gpu")


def memory_plan_line(model: str, vram_gb, resolution) -> str:
    """The memory plan of a run with these settings, as `app.py check` makes it (real sets only)."""
    if model not in PUBLISHED_MODEL_SETS:
        return ""
    from framepack_core.engine.memory_plan import plan_run

    try:
        return plan_run(model, vram_gb or None, None, int(resolution)).line()
    except Exception as error:  # the plan is advice: a failure to make it must not break the page
        return f"Memory plan unavailable: {error}"


# The settings' groups below the Start button: (group, accordion title, open at first, element id).
_ACCORDIONS = (("settings", "Settings", True, "fp-settings"), ("model", "Model and quality", False, None),
               ("creative", "Timed prompts and LoRA", False, None),
               ("end", "End frame, keyframes and loop (inverted sampling only)", False, "fp-creative"),
               ("advanced", "Advanced: guidance, window, step cache, attention, FP8, VAE tiling, GPUs, upscale and smooth", False, "fp-advanced"))
# Widgets that take a row of their own; the others go two to a row.
_WIDE = (WidgetKind.TEXT, WidgetKind.IMAGE, WidgetKind.LORAS, WidgetKind.KEYFRAMES)


class _Placer:
    """Builds a group's widgets from the settings table where it is called, into `form` by setting name."""

    def __init__(self, form: dict, values: dict, after: dict, model_choices, lora_dir):
        self.form, self.values, self.after = form, values, after
        self.model_choices, self.lora_dir = model_choices, lora_dir

    def __call__(self, group: str) -> None:
        settings = [setting for setting in PAGE_SETTINGS if setting.widget.group == group]
        rows, narrow = [], []
        for setting in settings:
            if setting.widget.kind in _WIDE:
                rows += [narrow, [setting]] if narrow else [[setting]]
                narrow = []
            else:
                narrow.append(setting)
                if len(narrow) == 2:
                    rows.append(narrow)
                    narrow = []
        for row in rows + [narrow] * bool(narrow):
            if len(row) == 1 and row[0].widget.kind in _WIDE:
                self._cell(row[0])
                continue
            with gr.Row():
                for setting in row:
                    with gr.Column(min_width=160):
                        self._cell(setting)

    def _cell(self, setting: Setting) -> None:
        self.form[setting.name] = _widget(setting, self.values.get(setting.name, setting.default),
                                          self.model_choices, self.lora_dir)
        if setting.name in self.after:
            self.after[setting.name]()


def _widget(setting: Setting, value, model_choices, lora_dir):
    """The gradio component of a setting's table entry: its kind, label, range or choices, and value."""
    w = setting.widget
    low = w.low if w.low is not None else setting.low
    high = w.high if w.high is not None else setting.high
    if value is None and setting.optional:
        value = w.auto
    common = dict(label=w.label, elem_id=f"fp-{setting.name.replace('_', '-')}") | ({"info": w.info} if w.info else {})
    options = {k: v for k, v in w.options.items() if k != "choice_labels"}
    if w.kind == WidgetKind.SLIDER:
        return gr.Slider(low, high, value=value, step=w.step, **common)
    if w.kind == WidgetKind.NUMBER:
        return gr.Number(value=value, precision=0 if setting.kind == SettingKind.INT else None, minimum=low, **common)
    if w.kind == WidgetKind.CHECKBOX:
        return gr.Checkbox(value, **common)
    if w.kind == WidgetKind.DROPDOWN:
        labels = w.options.get("choice_labels", {})
        choices = model_choices if setting.name == "model" else setting.choices
        return gr.Dropdown([(labels.get(c, c), c) for c in choices], value=value, **common)
    if w.kind == WidgetKind.RADIO and setting.flag_values:  # words for values (VAE tiling: auto, on, off)
        return gr.Radio([(word, w.auto if v is None else v) for word, v in setting.flag_values.items()],
                        value=value, **common)
    if w.kind == WidgetKind.RADIO:
        choices = ([("auto", w.auto)] if setting.optional else []) + [(c, c) for c in setting.choices]
        return gr.Radio(choices, value=value, **common)
    if w.kind == WidgetKind.TEXT:
        return gr.Textbox(value=value, **common, **options)
    if w.kind == WidgetKind.IMAGE:
        return gr.Image(type="pil", image_mode=None, sources=["upload", "clipboard"], **common, **options)
    if w.kind == WidgetKind.KEYFRAMES:
        return gr.File(type="filepath", file_count="multiple", file_types=["image"], **common)
    if w.kind == WidgetKind.LORAS:
        return gr.Dataframe(lora_rows(lora_dir), headers=[w.label, "Weight"], datatype=["str", "number"], type="array",
                            interactive=True, column_count=2, static_columns=[0], elem_id=common["elem_id"],
                            label=f"LoRA files in {lora_dir} (weight 0 = off)")
    raise ValueError(f"The page has no widget of kind {w.kind!r} (setting {setting.name}).")


def _stopping(handlers: Handlers):
    def stop():
        handlers.stop()
        return gr.update(interactive=False)
    return stop


def _to_outputs(u: PageUpdate) -> tuple:
    def keep_or(value, convert=lambda v: v):
        return gr.skip() if value is KEEP else convert(value)

    running = u.running
    stop = running if u.stoppable is KEEP else u.stoppable
    return (
        keep_or(u.progress),
        keep_or(u.preview),
        keep_or(u.video),
        keep_or(u.download, lambda path: gr.update(value=path, visible=path is not None)),
        keep_or(u.summary),
        keep_or(u.seed),
        keep_or(running, lambda r: gr.update(interactive=not r, value="Generating…" if r else "Start")),
        keep_or(stop, lambda r: gr.update(interactive=r)),
    )


def _header(model: str, device: str) -> str:
    badge = f"{MODEL_HELP.get(model, model)}" + (f" · {device}" if device else "")
    return ('<div class="fp-header"><div><h1>FramePack</h1><p>Turn a picture into a video, generated section '
            f'by section on your own machine.</p></div><span class="fp-badge">{badge}</span></div>')
