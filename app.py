"""FramePack desktop app.

    python app.py                      serve the page (see --help)
    python app.py generate --image PATH --prompt TEXT [...]   headless, to an MP4
    python app.py check [--vram-budget GB] [--ram-budget GB] [...]   the memory plan, before any download
    python app.py queue add|import|add-folder|list|run [...]  the job queue (see queue --help)
"""
from __future__ import annotations

import argparse
import sys

# Only the vocabulary of choices here: --help must not wait for torch (see framepack_core/options.py).
from framepack_core.options import (
    ATTENTION_KERNELS,
    CACHE_METHODS,
    DEFAULT_CACHE_THRESHOLD,
    DEFAULT_SEED,
    FP8_MODES,
    MODEL_SETS,
    MODES,
)

MODEL_CHOICES = MODEL_SETS


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_CHOICES, default="framepack",
                        help="model set: framepack (inverted sampling), framepack-f1 (forward), "
                             "tiny (small random weights built locally, for trying the app without downloads)")
    parser.add_argument("--models-dir", default=None,
                        help="local copy of the weights, laid out as DIR/<owner>/<repository>/... "
                             "(default: the Hugging Face cache; env FRAMEPACK_MODELS_DIR)")
    parser.add_argument("--resolution", type=int, default=640,
                        help="bucket size: 640 is the published table; others scale it (128..1536)")
    parser.add_argument("--vram-budget", type=float, default=None, metavar="GB",
                        help="GPU memory the app may use, in GiB, activations included (default: what is free); "
                             "model blocks that do not fit stream from system memory. Ignored without a CUDA GPU")
    parser.add_argument("--ram-budget", type=float, default=None, metavar="GB",
                        help="system memory the app may use, in GiB (default: what is available less 2 GiB); "
                             "streamed blocks beyond it are read from their files on disk instead of pinned RAM")


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine)")
    parser.add_argument("--listen", action="store_true", help="serve on all addresses (0.0.0.0), for other machines")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (off unless given)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="ask for this user name and password before showing the page or answering the API")
    parser.add_argument("--inbrowser", action="store_true", help="open the page in the default browser")
    parser.add_argument("--outputs", default="outputs", help="folder for videos, input pictures and settings")
    parser.add_argument("--lora-dir", default="loras", help="folder of LoRA files the page offers (default loras)")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: the top-level parser would otherwise take `generate --mode` for --model.
    parser = argparse.ArgumentParser(prog="app.py", description="FramePack image-to-video", allow_abbrev=False)
    add_serve_flags(parser)
    commands = parser.add_subparsers(dest="command")
    add_serve_flags(commands.add_parser("serve", help="serve the browser page (the default)", allow_abbrev=False))

    gen = commands.add_parser("generate", help="make a video without the browser page", allow_abbrev=False)
    gen.add_argument("--image", default=None, help="the start picture (needed unless --resume or --extend)")
    gen.add_argument("--prompt", default=None,
                     help="what should happen in the video (needed for a new video, and to extend a video not made "
                          "here); or what happens when: '[0s: he waves] [2.5s: he walks away]' (with --extend the "
                          "times count from the start of the new part)")
    gen.add_argument("--prompt-blend", type=int, default=0, metavar="N",
                     help="with timed prompts: cross over from one prompt to the next across N sections (default 0)")
    gen.add_argument("--lora", action="append", default=[], metavar="PATH[:WEIGHT]",
                     help="apply a LoRA (.safetensors: musubi/kohya, diffusers/PEFT or original HunyuanVideo); "
                          "weight default 1, negative allowed; repeat for several")
    gen.add_argument("--resume", default=None, metavar="PATH",
                     help="continue a stopped, failed or killed run from its last finished section "
                          "(its MP4, in-progress MP4 or JSON; one killed before its first section starts over "
                          "under the same name); the other flags are ignored")
    gen.add_argument("--extend", default=None, metavar="PATH",
                     help="continue a finished video (any H.264 MP4) by --seconds more at its own frame rate, "
                          "sampling forward, into a new MP4; the settings are the video's own unless given "
                          "(a video not made here needs --prompt)")
    gen.add_argument("--negative-prompt", default="", help="used only when --cfg is not 1")
    add_model_flags(gen)
    gen.add_argument("--mode", choices=MODES, default=None,
                     help="sampling order (default: the model set's own)")
    gen.add_argument("--end-image", default=None, help="optional last frame (inverted sampling only)")
    gen.add_argument("--keyframe", action="append", default=[], metavar="PATH@SECONDS[:WEIGHT]",
                     help="a picture the video passes through near SECONDS (inverted sampling only; weight 0..1, "
                          "default 1); repeat for several (README: which sections each conditions)")
    gen.add_argument("--loop", action="store_true", default=None,
                     help="end on the start picture, so the MP4 repeats without a cut (inverted sampling only)")
    gen.add_argument("--seconds", type=float, default=5.0, help="video length (default 5)")
    gen.add_argument("--steps", type=int, default=25, help="sampling steps per section (default 25)")
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    gen.add_argument("--window", type=int, default=9, help="latent frames per section (default 9)")
    gen.add_argument("--gs", type=float, default=10.0, help="distilled guidance (default 10)")
    gen.add_argument("--cfg", type=float, default=1.0, help="real CFG; 1 = off and twice as fast (default 1)")
    gen.add_argument("--rs", type=float, default=0.0, help="CFG rescale (default 0)")
    gen.add_argument("--crf", type=int, default=16, help="MP4 quality, 0 (lossless) .. 51 (default 16)")
    gen.add_argument("--no-step-cache", dest="step_cache", action="store_false",
                     help="compute every block on every step (slower; by default MagCache skips blocks on steps "
                          "where they would change little)")
    gen.add_argument("--cache-threshold", type=float, default=DEFAULT_CACHE_THRESHOLD,
                     help="step cache threshold: higher skips more and drifts more (default 0.15; 0.1 is safer)")
    gen.add_argument("--cache-method", choices=CACHE_METHODS, default=CACHE_METHODS[0],
                     help="step cache: magcache (default; the authors' ratios for FramePack), teacache, "
                          "or diffusers' first-block cache")
    gen.add_argument("--cache-calibrate", action="store_true",
                     help="measure MagCache's magnitude ratios for this model and step count (skipping nothing) "
                          "and save them; later MagCache runs with that model and step count use them")
    gen.add_argument("--attention", choices=ATTENTION_KERNELS, default="auto",
                     help="attention kernel (default auto: the fastest that works here, else PyTorch SDPA)")
    gen.add_argument("--fp8", nargs="?", const="storage", choices=FP8_MODES, default=None, metavar="MODE",
                     help="FP8 weights: storage (what --fp8 alone means: the transformer's weights in FP8, "
                          "multiplied in bf16: half the memory and streaming, slightly lossy), fast (also multiply "
                          "in FP8: faster on GPUs of compute capability 8.9+, RTX 40/50, H100; elsewhere refused "
                          "with a notice), off (the default)")
    gen.add_argument("--vae-tiling", choices=("auto", "on", "off"), default="auto",
                     help="decode the VAE in tiles: auto (default: when GPU memory is short), on, off")
    gen.add_argument("--compile", action="store_true",
                     help="torch.compile the transformer blocks (CUDA only; the first steps take longer)")
    gen.add_argument("--output", default=None, help="MP4 path (default: a fresh <date>-<time>_<seed>.mp4 in --outputs)")
    gen.add_argument("--outputs", default="outputs", help="folder for videos, input pictures and settings")
    gen.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")

    check = commands.add_parser("check", help="print the memory plan of a run (what stays where, peak VRAM and RAM)",
                                allow_abbrev=False)
    check.add_argument("--model", choices=("framepack", "framepack-f1"), default="framepack", help="model set")
    check.add_argument("--models-dir", default=None, help="where the weights are, as for generate")
    check.add_argument("--vram-budget", type=float, default=None, metavar="GB",
                       help="GPU memory in GiB (default: what is free, or 6 without a GPU)")
    check.add_argument("--ram-budget", type=float, default=None, metavar="GB",
                       help="system memory in GiB (default: what is available less 2 GiB)")
    check.add_argument("--resolution", type=int, default=640, help="bucket size (default 640)")
    check.add_argument("--seconds", type=float, default=5.0, help="video length (default 5)")
    check.add_argument("--fp8", action="store_true", help="plan with the transformer's weights in FP8")
    check.add_argument("--json", action="store_true", help="print the plan as one JSON line")
    parser.set_defaults(generate_parser=gen)
    from ui.queue_cli import add_queue_parser  # argparse only, no torch

    add_queue_parser(commands, gen)
    return parser


def main(argv: list[str] | None = None) -> int:
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
    if args.command == "queue":
        from ui.queue_cli import queue_command

        return queue_command(args)
    from ui.serve import serve_command

    return serve_command(args, MODEL_CHOICES)


if __name__ == "__main__":
    sys.exit(main())
