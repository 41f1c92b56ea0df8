"""`python app.py generate`: one video from the command line, progress on stderr."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from framepack_core import Failed, Finished, GenerationRequest, Notice, SectionDone, Stage, Step, generate
from framepack_core.models import MODEL_SETS, ModelsUnavailableError, load_models
from memory import DEFAULT_TILING_BYTES, GiB, ModelManager, activation_bytes, default_device


def default_output(seed: int, folder: str | os.PathLike = "outputs") -> Path:
    return Path(folder) / f"{time.strftime('%Y%m%d-%H%M%S')}_{seed}.mp4"


def check_output_path(path: Path) -> None:
    """Refuse an output we could not write, before any model is loaded."""
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"The output {str(path)!r} must end in .mp4.")
    if path.is_dir():
        raise ValueError(f"The output {str(path)!r} is a folder; give a file name ending in .mp4.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"The output {str(path)!r} lies inside {str(parent)!r}, which is a file.")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"The folder {str(parent)!r} is not writable.")
            break


def generate_command(args) -> int:
    request = GenerationRequest(
        image=args.image, prompt=args.prompt, negative_prompt=args.negative_prompt, seconds=args.seconds,
        seed=args.seed, steps=args.steps, window=args.window, gs=args.gs, cfg=args.cfg, rs=args.rs,
        resolution=args.resolution, crf=args.crf, mode=args.mode, end_image=args.end_image,
        step_cache=args.step_cache, cache_threshold=args.cache_threshold, cache_method=args.cache_method,
        attention=args.attention, fp8=args.fp8, compile=args.compile)
    output = Path(args.output) if args.output else default_output(args.seed)
    try:
        request = request.validated(MODEL_SETS[args.model].default_mode)
        check_output_path(output)
        models = load_models(args.model, models_dir=args.models_dir, progress=_say)
        manager = make_manager(default_device(), getattr(args, "vram_budget", None), models, request.resolution,
                               request.window)
    except (ValueError, ModelsUnavailableError) as error:
        _say(f"error: {error}")
        return 2 if isinstance(error, ValueError) else 1
    output.parent.mkdir(parents=True, exist_ok=True)

    device = default_device()
    cancel = threading.Event()
    _stop_on_ctrl_c(cancel)
    finished = None
    bar = None
    for event in generate(request, models, output, cancel, manager):
        if isinstance(event, Step):
            if bar is None:
                bar = tqdm(total=event.steps, desc=f"section {event.section + 1}/{event.sections}",
                           file=sys.stderr, leave=True)
            bar.update(1)
            if event.step == event.steps:
                bar.close()
                bar = None
        elif isinstance(event, Notice) or (isinstance(event, Stage) and event.name.startswith("encoding")):
            _say(event.message)
        elif isinstance(event, SectionDone):
            _say(f"section {event.section + 1}/{event.sections} done: {event.frames} frames")
        elif isinstance(event, Failed):
            _say(f"error: {event.message}")
            if event.partial_video:
                _say(f"the video so far is in {event.partial_video}")
            return 1
        elif isinstance(event, Finished):
            finished = event
    if bar is not None:
        bar.close()
    if finished is None or finished.video is None:
        _say("stopped before the first section was done; no video was written")
        return 130
    _say(f"{'stopped; ' if finished.stopped else ''}wrote {finished.video} "
         f"({finished.frames} frames, {finished.width}x{finished.height})")
    cache = _step_cache_summary(request, finished)
    _say(f"attention: {finished.attention}; step cache: " + (
        f"{cache['method']}, {cache['blocks_skipped']} of {cache['blocks_computed'] + cache['blocks_skipped']} "
        "block evaluations skipped" if cache["enabled"] else "off"))
    if args.json:
        summary = {
            "output": str(finished.video), "frames": finished.frames, "fps": finished.fps,
            "sections": finished.sections, "width": finished.width, "height": finished.height,
            "seed": finished.seed, "seconds_elapsed": round(finished.seconds_elapsed, 3),
            "stopped": finished.stopped, "model": args.model, "mode": request.mode, "device": str(device),
            "settings": request.settings_dict(), "attention": finished.attention,
            "step_cache": _step_cache_summary(request, finished),
        }
        print(json.dumps(summary), flush=True)
    return 130 if finished.stopped else 0


def _step_cache_summary(request: GenerationRequest, finished: Finished) -> dict:
    if not finished.step_cache:
        return {"enabled": False}
    total = finished.blocks_computed + finished.blocks_skipped
    return {"enabled": True, "method": finished.step_cache, "threshold": request.cache_threshold,
            "blocks_computed": finished.blocks_computed, "blocks_skipped": finished.blocks_skipped,
            "speedup": round(total / finished.blocks_computed, 3) if finished.blocks_computed else None}


def make_manager(device, budget_gb: float | None, models, resolution: int, window: int) -> ModelManager:
    """On a GPU: its budget (given in GiB, or what is free) with room kept for one step's activations
    at this size. Without a GPU every model stays on the CPU, and the budget has nothing to limit."""
    if device.type != "cuda":
        if budget_gb is not None:
            _say("note: --vram-budget applies to a CUDA GPU; there is none, so everything runs on the CPU")
        return ModelManager("cpu")
    config = models.transformer.config
    # Tokens of one transformer call: the noisy window (2x2 patches of the 1/8-size latent), about
    # 2.5 frames' worth of packed clean/2x/4x context, the padded prompt and the SigLIP image tokens.
    tokens = int((window + 2.5) * (resolution / 16) ** 2) + 512 + 729
    reserve = activation_bytes(tokens, config.num_attention_heads * config.attention_head_dim)
    tiling = int(DEFAULT_TILING_BYTES * (resolution / 640) ** 2)  # an untiled decode grows with the frame area
    budget = None if budget_gb is None else int(budget_gb * GiB)
    return ModelManager(device, budget_bytes=budget, reserve_bytes=reserve, tiling_bytes=tiling)


def _stop_on_ctrl_c(cancel: threading.Event) -> None:
    """The first Ctrl+C stops at the next step and keeps the video so far; a second one quits at once."""

    def stop(signum, frame):
        _say("stopping after the current step (the video so far is kept; Ctrl+C again to quit now)…")
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, stop)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
