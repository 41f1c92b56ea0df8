"""FramePack desktop app.

    python app.py                      serve the page (see --help)
    python app.py generate --image PATH --prompt TEXT [...]   headless, to an MP4
"""
from __future__ import annotations

import argparse
import sys

from framepack_core.request import DEFAULT_SEED

MODEL_CHOICES = ("framepack", "framepack-f1", "tiny")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_CHOICES, default="framepack",
                        help="model set: framepack (inverted sampling), framepack-f1 (forward), "
                             "tiny (small random weights built locally, for trying the app without downloads)")
    parser.add_argument("--models-dir", default=None,
                        help="local copy of the weights, laid out as DIR/<owner>/<repository>/... "
                             "(default: the Hugging Face cache; env FRAMEPACK_MODELS_DIR)")
    parser.add_argument("--resolution", type=int, default=640,
                        help="bucket size: 640 is the published table; others scale it (128..1536)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="FramePack image-to-video")
    commands = parser.add_subparsers(dest="command")

    gen = commands.add_parser("generate", help="make a video without the browser page")
    gen.add_argument("--image", required=True, help="the start picture")
    gen.add_argument("--prompt", required=True, help="what should happen in the video")
    gen.add_argument("--negative-prompt", default="", help="used only when --cfg is not 1")
    add_model_flags(gen)
    gen.add_argument("--mode", choices=("inverted", "forward"), default=None,
                     help="sampling order (default: the model set's own)")
    gen.add_argument("--end-image", default=None, help="optional last frame (inverted sampling only)")
    gen.add_argument("--seconds", type=float, default=5.0, help="video length (default 5)")
    gen.add_argument("--steps", type=int, default=25, help="sampling steps per section (default 25)")
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    gen.add_argument("--window", type=int, default=9, help="latent frames per section (default 9)")
    gen.add_argument("--gs", type=float, default=10.0, help="distilled guidance (default 10)")
    gen.add_argument("--cfg", type=float, default=1.0, help="real CFG; 1 = off and twice as fast (default 1)")
    gen.add_argument("--rs", type=float, default=0.0, help="CFG rescale (default 0)")
    gen.add_argument("--crf", type=int, default=16, help="MP4 quality, 0 (lossless) .. 51 (default 16)")
    gen.add_argument("--output", default=None, help="MP4 path (default: outputs/<time>_<seed>.mp4)")
    gen.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        from ui.cli import generate_command

        return generate_command(args)
    print("The browser page is not available yet; use: python app.py generate --help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
