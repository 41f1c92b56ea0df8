"""The Outputs tab: every run in the outputs folder, newest first, with its video, settings and actions.

Declared here so that layout.py only places it; the work is outputs.py's. The list is read from the
folder live (a gr.Timer compares the records' names and times each tick), so runs made by `generate`
and the queue appear too. Remake, Resume, Extend, Branch here and Bridge show their run on the Generate tab.
"""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .finish_page import FinishHandlers, finish_controls, wire_finish
from .handlers import KEEP, page_id
from .outputs import COLUMNS, OutputsHandlers
from .outputs_view import ACTIONS

GALLERY = 40  # thumbnails of the newest runs; the list has them all


def build_outputs_tab(outputs: OutputsHandlers, form: dict, run_outputs: list, to_outputs, tabs: gr.Tabs,
                      generate_tab: str) -> None:
    """Inside the page's gr.Tabs. `form`: the Generate tab's inputs by name; `run_outputs`/`to_outputs`: its
    run display and how a PageUpdate becomes its values; `generate_tab`: the Generate tab's id."""
    finishing = FinishHandlers(outputs)
    ui = _layout(outputs, finishing)
    listing, redraw = _wire_listing(outputs, ui)
    _wire_picking(outputs, ui)
    _wire_actions(outputs, ui, form, run_outputs, to_outputs, tabs, generate_tab)
    _wire_delete(outputs, ui, listing, redraw)
    wire_finish(finishing, ui.finish, ui.picked, tabs, run_outputs, to_outputs, generate_tab)  # Upscale, Interpolate


_PRIVATE = dict(queue=False, api_visibility="private", show_progress="hidden")

# Runs in the browser before Branch here's handler: what it returns are the handler's inputs, the second
# (the hidden branch_at) replaced by the Outputs player's current time; null when no video is shown.
PLAYER_TIME = """(name, at, more, prompt) => {
    const player = document.querySelector("#fp-out-video video");
    return [name, player ? player.currentTime : null, more, prompt];
}"""


def _layout(outputs: OutputsHandlers, finishing: FinishHandlers) -> SimpleNamespace:
    """The tab's components, by name."""
    with gr.Tab("Outputs", id="outputs", elem_id="fp-outputs") as tab:
        message = gr.Markdown("", elem_id="fp-out-message")
        with gr.Row(equal_height=False):
            with gr.Column(scale=6, min_width=380):
                # Both filled by the first tick of the timer (this page's own `seen` starts empty).
                gallery = gr.Gallery([], label="Runs (newest first; a frame of each video)", columns=8, rows=1,
                                     height=130, object_fit="cover", allow_preview=False, elem_id="fp-out-gallery")
                table = gr.Dataframe([[""] * len(COLUMNS)], headers=COLUMNS, interactive=False, wrap=True,
                                     column_widths=["38%", "11%", "13%", "20%", "18%"],
                                     elem_id="fp-out-table", label="Runs in the outputs folder (click one to pick it)")
            with gr.Column(scale=5, min_width=340):
                picked = gr.Textbox("", label="Picked run", interactive=False, elem_id="fp-out-picked")
                # Lineage: the runs this one's video continues, one click to pick them.
                made_from = gr.Radio([], label="Made from (click to pick it)", visible=False, elem_id="fp-out-sources")
                video = gr.Video(label="Video", interactive=False, height=280, elem_id="fp-out-video")
                # Off until a run is picked, then on where they apply (outputs_view.available).
                with gr.Row():
                    remake = gr.Button("Remake", size="sm", interactive=False, elem_id="fp-out-remake")
                    resume = gr.Button("Resume", size="sm", interactive=False, elem_id="fp-out-resume")
                    delete = gr.Button("Delete", size="sm", variant="stop", interactive=False, elem_id="fp-out-delete")
                with gr.Row(visible=False, elem_id="fp-out-confirm") as confirm_row:  # right under Delete
                    confirm_text = gr.Markdown("")
                    really = gr.Button("Yes, delete its files", size="sm", variant="stop", elem_id="fp-out-really")
                    keep = gr.Button("Keep it", size="sm", elem_id="fp-out-keep")
                with gr.Row():
                    seconds = gr.Number(2, minimum=0.5, label="Seconds to add", min_width=100,
                                        elem_id="fp-out-seconds")
                    extend = gr.Button("Extend", size="sm", interactive=False, elem_id="fp-out-extend")
                    branch = gr.Button("Branch here", size="sm", interactive=False, elem_id="fp-out-branch")
                with gr.Row():
                    # The finished runs of the picked one's size; redrawn with the list and on picking.
                    into = gr.Dropdown([], value=None, label="Bridge into", min_width=200,
                                       elem_id="fp-out-bridge-into")
                    bridge = gr.Button("Bridge", size="sm", interactive=False, elem_id="fp-out-bridge")
                finish = finish_controls(finishing)  # Upscale and Interpolate the picked run's video (finish_page.py)
                # The player's time when Branch here is pressed: filled in by the browser (PLAYER_TIME).
                branch_at = gr.Number(None, visible="hidden", elem_id="fp-out-branch-at")
                settings = gr.Markdown("", elem_id="fp-out-settings")
        names = gr.State([])  # the gallery's pictures, by run
        seen = gr.State(None)  # the folder's version this page last drew
        timer = gr.Timer(2.0)  # inside the tab: any other child of the page's gr.Tabs shows as a tab
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("outputs", "finishing")})


def _wire_listing(outputs: OutputsHandlers, ui: SimpleNamespace):
    """The list follows the folder: redrawn when a record comes, goes or changes, and on opening the tab. What a
    page has drawn is its own (`ui.seen`, a gr.State: one per browser session)."""
    def refresh(picked, into, seen):
        from .outputs import folder_version

        version = hash(folder_version(outputs.folder))
        if version == seen:
            return (gr.skip(),) * (5 + len(ACTIONS))
        runs = outputs.runs()
        pictures, names = outputs.gallery(runs[:GALLERY])
        # Nothing picked: the buttons are left as they are (a pick made since this tick began has set them).
        states = action_states(outputs, picked) if picked else [gr.skip()] * len(ACTIONS)
        return (outputs.rows(runs), pictures, names, bridge_targets(outputs, picked, into), version, *states)

    def redraw(picked, into):
        return refresh(picked, into, None)

    listing = [ui.table, ui.gallery, ui.names, ui.into, ui.seen, *(getattr(ui, name) for name in ACTIONS)]
    ui.timer.tick(refresh, [ui.picked, ui.into, ui.seen], listing, **_PRIVATE)
    ui.tab.select(redraw, [ui.picked, ui.into], listing, **_PRIVATE)
    return listing, redraw


def bridge_targets(outputs: OutputsHandlers, picked, into) -> gr.Dropdown:
    """"Bridge into"'s runs for the picked run, the choice kept while it is still one of them."""
    choices = outputs.bridge_choices(picked)
    return gr.Dropdown(choices=choices, value=into if into in {name for _, name in choices} else None)


def action_states(outputs: OutputsHandlers, picked) -> list:
    """The buttons of ACTIONS on where they apply to the picked run, off when none is picked."""
    return [gr.update(interactive=on) for on in outputs.actions(picked).values()]


def _wire_picking(outputs: OutputsHandlers, ui: SimpleNamespace) -> None:
    def show(name, into):
        path, text = outputs.details(name)
        came_from = outputs.sources(name)
        return (name, path, text, bridge_targets(outputs, name, into),
                gr.Radio(choices=came_from, value=None, visible=bool(came_from)), *action_states(outputs, name))

    def pick_row(into, event: gr.SelectData):
        return show(event.row_value[-1] if event.row_value else "", into)  # the File column: the run's name

    def pick_picture(shown, into, event: gr.SelectData):
        return show(shown[event.index] if 0 <= event.index < len(shown) else "", into)

    details = [ui.picked, ui.video, ui.settings, ui.into, ui.made_from, *(getattr(ui, name) for name in ACTIONS)]
    ui.table.select(pick_row, ui.into, details, **_PRIVATE)
    ui.gallery.select(pick_picture, [ui.names, ui.into], details, **_PRIVATE)
    ui.made_from.input(show, [ui.made_from, ui.into], details, **_PRIVATE)


def _wire_actions(outputs: OutputsHandlers, ui: SimpleNamespace, form: dict, run_outputs: list, to_outputs,
                  tabs: gr.Tabs, generate_tab: str) -> None:
    """Remake fills the Generate tab; Resume, Extend, Branch here and Bridge run there, shown as any run of the
    page."""
    def remake_run(name):
        try:
            values = outputs.remake_form(name)
        except ValueError as error:
            return {ui.message: str(error)}
        return {form[key]: value for key, value in values.items() if key in form} | {
            ui.message: f"The Generate tab holds the settings of {name}; press Start to make it again.",
            tabs: gr.Tabs(selected=generate_tab)}

    ui.remake.click(remake_run, ui.picked, [ui.message, tabs, *form.values()], **_PRIVATE)

    def follow(updates):
        """A run that starts is shown on the Generate tab; one refused before it starts (nothing picked, nothing
        to resume, the machine busy) leaves the person here, with the sentence above the list."""
        updates = iter(updates)
        first = next(updates, None)
        if first is None:
            return
        if first.refused is not KEEP:
            yield {ui.message: first.refused} | dict(zip(run_outputs, to_outputs(first)))
            return
        yield {tabs: gr.Tabs(selected=generate_tab), ui.message: ""} | dict(zip(run_outputs, to_outputs(first)))
        for update in updates:
            yield dict(zip(run_outputs, to_outputs(update)))

    running = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")

    def resume_run(name, request: gr.Request):
        yield from follow(outputs.resume(name, page=page_id(request)))

    def extend_run(name, more, prompt, request: gr.Request):
        yield from follow(outputs.extend(name, more, prompt, page=page_id(request)))

    def branch_run(name, at, more, prompt, request: gr.Request):
        yield from follow(outputs.branch(name, at, more, prompt, page=page_id(request)))

    def bridge_run(name, into, more, prompt, request: gr.Request):
        yield from follow(outputs.bridge(name, into, more, prompt, page=page_id(request)))

    shown = [tabs, ui.message, *run_outputs]
    ui.resume.click(resume_run, ui.picked, shown, **running)
    ui.extend.click(extend_run, [ui.picked, ui.seconds, form["prompt"]], shown, **running)
    ui.branch.click(branch_run, [ui.picked, ui.branch_at, ui.seconds, form["prompt"]], shown, js=PLAYER_TIME,
                    **running)
    ui.bridge.click(bridge_run, [ui.picked, ui.into, ui.seconds, form["prompt"]], shown, **running)


def _wire_delete(outputs: OutputsHandlers, ui: SimpleNamespace, listing: list, redraw) -> None:
    """Delete asks first, then removes the run's files and redraws the list."""
    def ask(name):
        try:
            run = outputs.find(name)
        except ValueError as error:
            return str(error), gr.Row(visible=False), ""
        return "", gr.Row(visible=True), f"Delete every file of **{run.name}** (video, pictures, latents, record)?"

    def really_delete(name, into):
        try:
            text = outputs.delete(name)
        except (ValueError, OSError) as error:
            text = str(error)
        listing_values = list(redraw("", into))
        listing_values[-len(ACTIONS):] = [gr.update(interactive=False)] * len(ACTIONS)  # nothing picked now
        return (text, gr.Row(visible=False), "", None, "", *listing_values)

    ui.delete.click(ask, ui.picked, [ui.message, ui.confirm_row, ui.confirm_text], **_PRIVATE)
    ui.keep.click(lambda: gr.Row(visible=False), None, ui.confirm_row, **_PRIVATE)
    ui.really.click(really_delete, [ui.picked, ui.into], [ui.message, ui.confirm_row, ui.picked, ui.video, ui.settings, *listing],
                    **_PRIVATE)
