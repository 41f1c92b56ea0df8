"""FramePack desktop app.

    python app.py                      serve the page (see --help)
    python app.py generate --image PATH --prompt TEXT [...]   headless, to an MP4
    python app.py check [--vram-budget GB] [--ram-budget GB] [--rehearse] [...]   the memory plan, before any download
    python app.py queue add|import|add-folder|list|run|cancel|retry|delete|clear [...]  the job queue (see queue --help)
    python app.py upscale VIDEO --scale 2|4 [--model NAME_OR_PATH]   a made video bigger, into a new MP4
    python app.py interpolate VIDEO --factor 2|4 [--model PATH]      smoother (RIFE, or ffmpeg's minterpolate)
"""
from __future__ import annotations

import argparse
import sys

# Only the settings table here: --help must not wait for torch (see framepack_core/settings.py).
from framepack_core.reproducible import pin_blas
from framepack_core.settings import MODEL_SETS, PUBLISHED_MODEL_SETS, SETTINGS, SETTINGS_LIST
from ui.flags import BUDGET_FLAGS, GENERATE_GROUPS, add_setting_flags

MODEL_CHOICES = MODEL_SETS
# What serving the page and making videos take from the table beside the budgets: the page's defaults.
_SERVE_SETTINGS = ("model", "resolution")


def add_model_flags(parser: argparse.ArgumentParser, groups: dict | None = None) -> None:
    """The model set, the size, where the weights are and the budgets: what every command that loads models takes."""
    add_setting_flags(parser, (*_SERVE_SETTINGS, *BUDGET_FLAGS), groups)


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine)")
    parser.add_argument("--listen", action="store_true", help="serve on all addresses (0.0.0.0), for other machines")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (off unless given)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="ask for this user name and password before showing the page or answering the API")
    parser.add_argument("--inbrowser", action="store_true", help="open the page in the default browser")
    add_setting_flags(parser, ("folder",))
    parser.add_argument("--lora-dir", default="loras", help="folder of LoRA files the page offers (default loras)")
    parser.add_argument("--allow-folder", action="append", default=[], metavar="DIR",
                        help="a folder whose pictures a queue file imported on the page may name (repeat for "
                             "several); without it only pictures in the outputs folder")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: the top-level parser would otherwise take `generate --mode` for --model.
    parser = argparse.ArgumentParser(prog="app.py", description="FramePack image-to-video", allow_abbrev=False)
    add_serve_flags(parser)
    commands = parser.add_subparsers(dest="command")
    add_serve_flags(commands.add_parser("serve", help="serve the browser page (the default)", allow_abbrev=False))

    gen = commands.add_parser("generate", help="make a video without the browser page", allow_abbrev=False)
    groups = {title: gen.add_argument_group(title) for title in GENERATE_GROUPS}
    add_model_flags(gen, groups)
    add_setting_flags(gen, [s.name for s in SETTINGS_LIST if s.name not in (*_SERVE_SETTINGS, *BUDGET_FLAGS)], groups)
    continuing = groups["continuing a video"]
    continuing.add_argument("--resume", default=None, metavar="PATH",
                     help="continue a stopped, failed or killed run from its last finished section "
                          "(its MP4, in-progress MP4 or JSON; one killed before its first section starts over "
                          "under the same name); the other flags are ignored")
    continuing.add_argument("--extend", default=None, metavar="PATH",
                     help="continue a finished video (any H.264 MP4) by --seconds more at its own frame rate, "
                          "sampling forward, into a new MP4; the settings are the video's own unless given "
                          "(a video not made here needs --prompt)")
    continuing.add_argument("--from", dest="from_seconds", type=float, default=None, metavar="SECONDS",
                     help="with --extend: branch the video instead, keeping it up to SECONDS and continuing from "
                          "there into a new MP4 (the cut moves to a keyframe within a second, so the frames before it "
                          "are copied exactly; with none that near they are encoded again)")
    continuing.add_argument("--bridge", nargs=2, default=None, metavar=("A", "B"),
                     help="make about --seconds (whole sections) leading from video A's last frame into video B's "
                          "first, and write "
                          "A, the bridge, then B (A and B copied, not re-encoded; same size and frame rate) into a "
                          "new MP4; the settings are A's own unless given (videos not made here need --prompt)")
    groups["output"].add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")

    check = commands.add_parser("check", help="print the memory plan of a run (what stays where, peak VRAM and RAM)",
                                allow_abbrev=False)
    # --fp8 as generate takes it (alone: storage); not given, the table's default (a plan needs a mode).
    add_setting_flags(check, ("model", "resolution", "seconds", "fp8", "vae_tiling", *BUDGET_FLAGS),
                      model=dict(choices=PUBLISHED_MODEL_SETS, help=f"the published model set to plan: "
                                 f"{', '.join(PUBLISHED_MODEL_SETS)} (default {SETTINGS['model'].default})"),
                      fp8=dict(default=SETTINGS["fp8"].default),
                      vram_budget_gb=dict(metavar="GiB", help="GPU memory in GiB (default: what is free, or 6 without "
                                                              "a GPU)"),
                      ram_budget_gb=dict(metavar="GiB", help="system memory in GiB (default: what is available less "
                                                             "2 GiB)"),
                      models_dir=dict(help="where the weights are, as for generate"),
                      vae_tiling=dict(help="with --rehearse: decode in tiles: auto (as a run decides), on, off"))
    check.add_argument("--json", action="store_true", help="print the plan as one JSON line")
    check.add_argument("--rehearse", action="store_true",
                       help="run every stage of such a run at full size with shapes only (no weights, no GPU; "
                            "seconds): each stage's peak VRAM beside the plan, exit 2 if one overruns")
    parser.set_defaults(generate_parser=gen)
    from ui.queue_cli import add_queue_parser  # argparse only, no torch

    add_queue_parser(commands, gen)
    from ui.finish_cli import add_finish_parsers  # argparse only, no torch

    add_finish_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    pin_blas()  # before torch computes anything: MKL reads it once (framepack_core/reproducible.py)
    args = build_parser().parse_args(argv)
    if args.command == "check":
        from ui.check import check_command

        return check_command(args)
    if args.command == "generate":
        from ui.cli import generate_command

        # Which flags were given (an extension keeps the source's settings for the others).
        args.given = {name for name, value in vars(args).items()
                      if name != "generate_parser" and value != args.generate_parser.get_default(name)}

        return generate_command(args)
    if args.command in ("upscale", "interpolate"):
        from ui.finish_cli import finish_command

        return finish_command(args)
    if args.command == "queue":
        from ui.queue_cli import queue_command

        return queue_command(args)
    from ui.serve import serve_command

    return serve_command(args, MODEL_CHOICES)


if __name__ == "__main__":
    sys.exit(main())
