"""The page, declared in one function: inputs on the left, the growing video on the right."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from .creative import keyframe_timeline_html, lora_rows, timeline_html
from .handlers import FORM_FIELDS, KEEP, MODEL_DEFAULT_MODE, Handlers, PageUpdate
from .progress import idle_html
from .outputs import OutputsHandlers
from .outputs_tab import build_outputs_tab
from .queue_tab import build_queue_tab

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_PROMPTS = [
    "The sun sets slowly behind the hills while clouds drift across the sky.",
    "The person smiles, turns their head and waves at the camera.",
    "The camera slowly pushes in as the leaves sway in a gentle wind.",
    "The cat stretches, yawns and curls up to sleep.",
]
GENERATE_TAB = "generate"  # the tab's id: Remake and Resume in the Outputs tab switch to it
MODEL_HELP = {"framepack": "FramePack I2V", "framepack-f1": "FramePack F1", "tiny": "tiny (test set, noise)"}

# System and bundled fonts only: the page must not reach out to font services (offline desktops).
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Consolas", "monospace"])
CSS = (Path(__file__).with_name("page.css")).read_text(encoding="utf-8")


def build_page(handlers: Handlers, model_choices: tuple[str, ...], queue=None) -> gr.Blocks:
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
                        image = gr.Image(label="Start picture", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                         height=320, placeholder="Drop a picture here, paste one, or click to upload",
                                         elem_id="fp-image")
                        if EXAMPLES_DIR.joinpath("hills.jpg").is_file():
                            gr.Examples([[str(EXAMPLES_DIR / "hills.jpg")]], inputs=[image], label="Example picture")
                        prompt = gr.Textbox(label="What should happen", lines=2, max_lines=6, elem_id="fp-prompt",
                                            placeholder="Describe the motion, e.g. the person turns and smiles")
                        timeline = gr.HTML(timeline_html("", 5), elem_id="fp-timeline")
                        with gr.Row():
                            start = gr.Button("Start", variant="primary", size="lg", elem_id="fp-start", scale=3)
                            stop = gr.Button("Stop", variant="stop", size="lg", interactive=False, elem_id="fp-stop",
                                             scale=1)
                            add_queue = gr.Button("Add to queue", size="lg", elem_id="fp-add-queue", scale=1,
                                                  visible=queue is not None)
                        with gr.Row():
                            resume = gr.Button("Resume stopped run", size="sm", elem_id="fp-resume")
                            extend = gr.Button("Extend", size="sm", elem_id="fp-extend")
                        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts")
                        with gr.Accordion("Continue a video", open=False, elem_classes="fp-settings"):
                            source_video = gr.Video(label="Video to extend (optional: else the last finished one)",
                                                    sources=["upload"], height=200, elem_id="fp-source-video")
                            extend_seconds = gr.Slider(1, 60, value=2, step=0.5, label="Seconds to add",
                                                       elem_id="fp-extend-seconds")
                        with gr.Accordion("Settings", open=True, elem_id="fp-settings", elem_classes="fp-settings"):
                            with gr.Row():
                                seconds = gr.Slider(1, 120, value=5, step=0.5, label="Length (seconds)",
                                                    elem_id="fp-seconds")
                                steps = gr.Slider(1, 100, value=25, step=1, label="Steps per section",
                                                  elem_id="fp-steps")
                            with gr.Row():
                                with gr.Column(min_width=160):
                                    seed = gr.Number(value=31337, precision=0, minimum=0, label="Seed", elem_id="fp-seed")
                                    randomize = gr.Checkbox(False, label="New random seed each run", elem_id="fp-randomize")
                                with gr.Column(min_width=160):
                                    gs = gr.Slider(1, 32, value=10, step=0.5, label="Guidance (gs)", elem_id="fp-gs")
                                    step_cache = gr.Checkbox(True, label="Step cache", elem_id="fp-step-cache",
                                                             info="Faster: skips work on steps that change little")
                        with gr.Accordion("Model and quality", open=False, elem_classes="fp-settings"):
                            with gr.Row():
                                model = gr.Dropdown([(MODEL_HELP.get(m, m), m) for m in model_choices], value=s.model,
                                                    label="Model set", elem_id="fp-model")
                                mode = gr.Radio([("auto", MODEL_DEFAULT_MODE), ("inverted", "inverted"),
                                                 ("forward", "forward")], value=MODEL_DEFAULT_MODE, label="Sampling order",
                                                info="auto: inverted for FramePack, forward for F1")
                            with gr.Row():
                                resolution = gr.Slider(128, 1536, value=s.resolution, step=16, label="Resolution",
                                                       info="640: the trained size")
                                crf = gr.Slider(0, 51, value=16, step=1, label="MP4 quality (CRF)",
                                                info="0 lossless · 23 smaller")
                            vram = gr.Number(value=handlers.worker.config.vram_budget_gb or 0, minimum=0, label="VRAM budget (GB)",
                                             info="0 = automatic. Lower it if the GPU runs out of memory.")
                            memory_plan = gr.Markdown("", elem_id="fp-memory-plan")  # app.py check's plan, in one line
                        with gr.Accordion("Timed prompts and LoRA", open=False, elem_classes="fp-settings"):
                            prompt_blend = gr.Slider(0, 8, value=0, step=1, label="Prompt blend (sections)",
                                                     elem_id="fp-prompt-blend",
                                                     info="Cross over from one timed prompt to the next across this many "
                                                          "sections")
                            loras = gr.Dataframe(lora_rows(s.lora_dir), headers=["LoRA", "Weight"],
                                                 datatype=["str", "number"], type="array", interactive=True,
                                                 column_count=2, static_columns=[0], elem_id="fp-loras",
                                                 label=f"LoRA files in {s.lora_dir} (weight 0 = off)")
                            refresh = gr.Button("Look for LoRA files again", size="sm")
                        with gr.Accordion("End frame, keyframes and loop (inverted sampling only)", open=False,
                                          elem_id="fp-creative"):
                            end_image = gr.Image(label="End picture (optional)", type="pil", image_mode=None, height=200,
                                                 sources=["upload", "clipboard"], placeholder="The video ends on this picture")
                            keyframes = gr.File(label="Keyframes: pictures the video passes through", type="filepath",
                                                file_count="multiple", file_types=["image"], elem_id="fp-keyframes")
                            keyframe_times = gr.Textbox(label="Keyframe times (seconds, one per picture; :weight "
                                                              "0..1 optional)", placeholder="1.2, 3:0.5",
                                                        elem_id="fp-keyframe-times")
                            loop = gr.Checkbox(False, label="Loop: end on the start picture", elem_id="fp-loop")
                            keyframe_timeline = gr.HTML("", elem_id="fp-keyframe-timeline")
                    with gr.Column(scale=6, min_width=380):
                        progress = gr.HTML(idle_html(), elem_id="fp-progress")
                        preview = gr.Image(label="Current section (live preview)", interactive=False, height=230,
                                           elem_id="fp-preview", buttons=[], format="png")
                        video = gr.Video(label="Video", interactive=False, autoplay=True, loop=True, height=380,
                                         elem_id="fp-video")
                        download = gr.DownloadButton("Download MP4", visible=False, variant="primary", elem_id="fp-download")
                        summary = gr.Markdown("", elem_id="fp-summary")
            outputs = [progress, preview, video, download, summary, seed, start, stop]

            form = dict(image=image, prompt=prompt, seconds=seconds, seed=seed, randomize=randomize, steps=steps, gs=gs,
                        step_cache=step_cache, model=model, mode=mode, end_image=end_image, resolution=resolution,
                        crf=crf, vram_budget_gb=vram, prompt_blend=prompt_blend, loras=loras, keyframes=keyframes,
                        keyframe_times=keyframe_times, loop=loop)
            assert tuple(form) == FORM_FIELDS
        with tabs:  # Generate, Queue, Outputs
            if queue is not None:
                build_queue_tab(queue, form, add_queue)
            build_outputs_tab(OutputsHandlers(handlers), form, outputs, _to_outputs, tabs, GENERATE_TAB)

        def run(values: dict):  # gradio hands a set of inputs over as one dict, keyed by component
            for update in handlers.page_run({name: values[component] for name, component in form.items()}):
                yield _to_outputs(update)

        for source in (prompt, seconds):  # the timeline follows the typing; pure Python, no queue
            source.change(timeline_html, [prompt, seconds], timeline, queue=False, show_progress="hidden",
                          api_visibility="private")
        for source in (keyframes, keyframe_times, seconds, loop):  # which sections each keyframe conditions
            source.change(keyframe_timeline_html, [keyframes, keyframe_times, seconds, loop], keyframe_timeline,
                          queue=False, show_progress="hidden", api_visibility="private")
        refresh.click(lambda: lora_rows(s.lora_dir), None, loras, queue=False, api_visibility="private")
        for control in (model, resolution, vram):
            control.change(memory_plan_line, [model, vram, resolution], [memory_plan], queue=False,
                           show_progress="hidden", api_visibility="private")
        page.load(memory_plan_line, [model, vram, resolution], [memory_plan], queue=False, show_progress="hidden",
                  api_visibility="private")

        start.click(run, set(form.values()), outputs, concurrency_id="gpu", show_progress="hidden", api_visibility="private")
        stop.click(_stopping(handlers), None, [stop], queue=False, show_progress="hidden", api_visibility="private")

        def resume_run():
            for update in handlers.page_resume():
                yield _to_outputs(update)

        def extend_run(upload, seconds, text):
            for update in handlers.page_extend(upload, seconds, text):
                yield _to_outputs(update)

        resume.click(resume_run, None, outputs, concurrency_id="gpu", show_progress="hidden",
                     api_visibility="private")
        extend.click(extend_run, [source_video, extend_seconds, prompt], outputs, concurrency_id="gpu",
                     show_progress="hidden", api_visibility="private")

        # The API: a button nobody sees, whose click is the named endpoint (gradio_client's /generate).
        api_trigger = gr.Button(visible=False)
        api_result = gr.File(visible=False, label="MP4")
        # A file, not an Image: the picture is opened by the app's own loader, whose message for a broken
        # file is one sentence, where gradio's preprocessing would answer "Could not preprocess input ...".
        api_image = gr.File(visible=False, type="filepath", label="image")
        # Numbers without the sliders' bounds or rounding: gradio's own checks would answer 0 or "abc" with a
        # message that names no field (or a traceback); the request's validator says what is wrong instead.
        api_seconds = gr.Number(5, visible=False, label="seconds")
        api_seed = gr.Number(31337, visible=False, label="seed")
        api_steps = gr.Number(25, visible=False, label="steps")
        api_loras = gr.Textbox("", visible=False, label="loras")
        api_blend = gr.Number(0, visible=False, label="prompt_blend")
        api_keyframes = gr.File(visible=False, type="filepath", file_count="multiple", label="keyframes")
        api_keyframe_times = gr.Textbox("", visible=False, label="keyframe_times")
        api_loop = gr.Checkbox(False, visible=False, label="loop")

        def generate(image, prompt, seconds=5.0, seed=31337, steps=25, loras="", prompt_blend=0, keyframes=None,
                     keyframe_times="", loop=False):
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
                          api_result,
                          api_name="generate", concurrency_id="gpu")
    return page


def memory_plan_line(model: str, vram_gb, resolution) -> str:
    """The memory plan of a run with these settings, as `app.py check` makes it (real sets only)."""
    if model not in ("framepack", "framepack-f1"):
        return ""
    from framepack_core.memory_plan import plan_run

    try:
        return plan_run(model, vram_gb or None, None, int(resolution)).line()
    except Exception as error:  # the plan is advice: a failure to make it must not break the page
        return f"Memory plan unavailable: {error}"


def _stopping(handlers: Handlers):
    def stop():
        handlers.stop()
        return gr.update(interactive=False)
    return stop


def _to_outputs(u: PageUpdate) -> tuple:
    def keep_or(value, convert=lambda v: v):
        return gr.skip() if value is KEEP else convert(value)

    running = u.running
    return (
        keep_or(u.progress),
        keep_or(u.preview),
        keep_or(u.video),
        keep_or(u.download, lambda path: gr.update(value=path, visible=path is not None)),
        keep_or(u.summary),
        keep_or(u.seed),
        keep_or(running, lambda r: gr.update(interactive=not r, value="Generating…" if r else "Start")),
        keep_or(running, lambda r: gr.update(interactive=r)),
    )


def _header(model: str, device: str) -> str:
    badge = f"{MODEL_HELP.get(model, model)}" + (f" · {device}" if device else "")
    return ('<div class="fp-header"><div><h1>FramePack</h1><p>Turn a picture into a video, generated section '
            f'by section on your own machine.</p></div><span class="fp-badge">{badge}</span></div>')
