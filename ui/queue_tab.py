"""The Queue tab: the jobs of the shared queue, their pictures and videos, and what to do with them.

Declared here so that layout.py only places it; the work is queue_handlers.py's. Every open tab
polls the store once a second (gr.Timer), so all of them show the same queue.
"""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .progress import idle_html
from .queue_handlers import ACTIONS, COLUMNS, QueueHandlers


def build_queue_tab(queue: QueueHandlers, form: dict, add_button: gr.Button, notice=None) -> None:
    """Inside the page's gr.Tabs. `form`: the page's inputs by name (as Start takes them); `add_button`: "Add to
    queue" beside Start; `notice`: where the Generate tab shows what Add to queue did (its progress box)."""
    with gr.Tab("Queue", id="queue", elem_id="fp-queue") as tab:
        with gr.Column():
            message = gr.Markdown("", elem_id="fp-queue-message")
            with gr.Row(equal_height=False):
                with gr.Column(scale=6, min_width=380):
                    table = gr.Dataframe(queue.rows(), headers=COLUMNS, interactive=False, wrap=True,
                                         elem_id="fp-queue-table", label="Jobs (click a row to pick it)")
                    with gr.Row():
                        picked = gr.Number(None, precision=0, label="Job #", min_width=80, elem_id="fp-queue-job")
                        buttons = {name: gr.Button(name.capitalize(), size="sm", min_width=60,
                                                   elem_id=f"fp-queue-{name}")
                                   for name in ACTIONS}
                    with gr.Row():
                        clear = gr.Button("Clear finished", size="sm")
                        export = gr.Button("Export JSON", size="sm")
                        exported = gr.File(label="Exported queue", visible=False, interactive=False)
                    with gr.Row():
                        upload = gr.File(label="Import (JSON, JSON Lines or CSV)", file_types=[".json", ".jsonl", ".csv"],
                                         type="filepath", height=90)
                        import_button = gr.Button("Import", size="sm")
                    working = gr.Checkbox(queue.running.is_set(), label="Work through the queue on this machine",
                                          elem_id="fp-queue-running")
                    gallery = gr.Gallery(queue.thumbnails(), label="Pictures", columns=8, rows=1, height=130,
                                         object_fit="cover", allow_preview=False, elem_id="fp-queue-gallery")
                with gr.Column(scale=5, min_width=340):
                    live_progress = gr.HTML(elem_id="fp-queue-progress")
                    live_preview = gr.Image(label="Running job (live preview)", interactive=False, height=200,
                                            buttons=[], format="png")
                    live_video = gr.Video(label="Running job (video so far)", interactive=False, height=240,
                                          elem_id="fp-queue-live-video")
                    picked_video = gr.Video(label="Picked job's video", interactive=False, height=240,
                                            elem_id="fp-queue-video")
            timer = gr.Timer(1.0)  # inside the tab: any other child of the page's gr.Tabs shows as a tab
            seen = gr.State(None)  # (the store's version, the switch) as this page last drew them: its own
    _wire(queue, form, add_button, SimpleNamespace(**locals()), notice)


def _wire(queue: QueueHandlers, form: dict, add_button: gr.Button, tab: SimpleNamespace, notice=None) -> None:
    """What the tab's parts (`tab`, by name) do."""
    message, table, picked, buttons, working = tab.message, tab.table, tab.picked, tab.buttons, tab.working
    # What the poll redraws; `seen` is this page's own (gr.State: one per browser session), so one page reading a
    # change does not use it up for the others.
    seen = tab.seen
    listing = [table, tab.gallery, tab.live_progress, tab.live_preview, tab.live_video, working, seen]

    def refresh(last):
        """The list when the store changed since this page last drew it; the switch when another page flipped it."""
        version, on = queue.version(), queue.running.is_set()
        progress, preview, video = queue.live_view()
        old_version, old_on = last or (None, None)
        rows = (queue.rows(), queue.thumbnails()) if version != old_version else (gr.skip(), gr.skip())
        return *rows, progress, preview, video, on if on != old_on else gr.skip(), (version, on)

    def redraw():
        return refresh(None)

    tab.timer.tick(refresh, seen, listing, show_progress="hidden", queue=False, api_visibility="private")
    tab.tab.select(redraw, None, listing, show_progress="hidden", queue=False, api_visibility="private")

    def pick(event: gr.SelectData):
        row = event.row_value if event.row_value else None
        job_id = row[0] if row else None
        return job_id, queue.video(job_id)

    table.select(pick, None, [picked, tab.picked_video], queue=False, api_visibility="private", show_progress="hidden")
    for name, button in buttons.items():
        button.click(lambda job_id, name=name: queue.act(name, job_id), picked, message, queue=False, api_visibility="private") \
              .then(redraw, None, listing, queue=False, api_visibility="private", show_progress="hidden")
    tab.clear.click(queue.clear_finished, None, message, queue=False, api_visibility="private").then(redraw, None, listing, queue=False, api_visibility="private")
    tab.export.click(lambda: gr.update(value=queue.export(), visible=True), None, tab.exported, queue=False, api_visibility="private")
    tab.import_button.click(queue.import_, tab.upload, message, queue=False, api_visibility="private").then(redraw, None, listing, queue=False, api_visibility="private")
    working.input(queue.set_running, working, None, queue=False, api_visibility="private")  # a person's click only

    def add(values: dict):
        text = queue.add({name: values[component] for name, component in form.items()})
        return (text, idle_html(text, error=text.startswith("Not queued"))) if notice is not None else text

    add_button.click(add, set(form.values()), [message, notice] if notice is not None else message, queue=False,
                     api_visibility="private").then(redraw, None, listing, queue=False, api_visibility="private")
