"""One generation, from a validated request to an MP4, reported as a stream of events.

`run(...)` does the work and hands each event to `emit`; `generate(...)` is the same run
as an iterator (the work happens on a producer thread, so that per-step events can be
yielded while the sampler, which reports through a callback, is still inside a section).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

import torch

from memory import ModelManager, release_free_host_memory

from .conditioning import crop_to_bucket, encode_latent, encode_prompt, encode_siglip, resize_and_center_crop
from .events import Event, Failed, Finished, Notice, Preview, SectionDone, Stage, Step
from .request import GenerationRequest
from .schedule import FPS, decode_span, overlap_frames
from .sections import Conditioning, run_sections
from .segments import SegmentedVideo
from .speed import prepare_transformer
from .step_cache import step_cache
from .video import decode_latents, latent_preview

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised from the step callback when the user pressed Stop."""


def progress_path(output: Path) -> Path:
    """Where the video so far lives while a run is going; the output is only replaced at the end."""
    return output.with_name(f"{output.stem}.in-progress{output.suffix}")


def run(request: GenerationRequest, models, output: str | os.PathLike, emit: Callable[[Event], None],
        cancel: threading.Event | None = None, manager: ModelManager | None = None) -> None:
    started = time.monotonic()
    cancel = cancel or threading.Event()
    manager = manager or ModelManager("cpu")
    output = Path(output)
    progress = progress_path(output)
    state = _RunState()
    try:
        req = request.validated(models.spec.default_mode)
        _generate(req, models, output, progress, emit, cancel, manager, state, started)
    except Cancelled:
        emit(_finish(state, output, progress, started, stopped=True))
    except Exception as error:  # any failure ends this run only; the caller keeps serving
        log.exception("generation failed")
        emit(Failed(_user_message(error), traceback.format_exc(),
                    partial_video=progress if progress.exists() else None))


def generate(request: GenerationRequest, models, output: str | os.PathLike,
             cancel: threading.Event | None = None, manager: ModelManager | None = None) -> Iterator[Event]:
    """`run` as an iterator. Closing the iterator early stops the run at the next step."""
    cancel = cancel or threading.Event()
    events: queue.Queue = queue.Queue()
    done = object()

    def work():
        try:
            run(request, models, output, events.put, cancel, manager)
        finally:
            events.put(done)

    worker = threading.Thread(target=work, name="framepack-generate", daemon=True)
    worker.start()
    try:
        while (event := events.get()) is not done:
            yield event
    finally:
        cancel.set()
        worker.join()


class _RunState:
    """What a stop or a failure needs to know about the run so far."""

    def __init__(self):
        self.seed = 0
        self.sections_done = 0
        self.frames = 0
        self.width = self.height = 0
        self.attention = ""
        self.cache = None  # the step cache, for its counts of block evaluations


def _generate(req, models, output, progress, emit, cancel, manager, state, started):
    state.seed = req.seed
    settings = req.section_settings()
    emit(Stage("encoding_prompt", "Encoding the prompt"))
    with manager.use(models.text_encoder, models.text_encoder_2):
        prompt = encode_prompt(models, req.prompt)
        negative = encode_prompt(models, req.negative_prompt).conditioning if req.cfg != 1 else None
    if prompt.truncated:
        emit(Notice("The prompt is longer than the text encoder reads; its end was left out."))
    _check(cancel)

    emit(Stage("encoding_image", "Encoding the picture"))
    pixels = crop_to_bucket(req.image, req.resolution)
    state.height, state.width = pixels.shape[:2]
    with manager.use(models.vae):
        start_latent = encode_latent(models.vae, pixels)
        end_latent = None
        if req.end_image is not None:
            end_pixels = resize_and_center_crop(req.end_image, state.width, state.height)
            end_latent = encode_latent(models.vae, end_pixels)
    with manager.use(models.image_encoder):
        image_embeds = encode_siglip(models.feature_extractor, models.image_encoder, pixels)
    _check(cancel)

    cond = Conditioning(*prompt.conditioning, image_embeds=image_embeds, negative=negative)
    count = settings.sections

    def on_step(section, step, steps, x, x0):
        emit(Step(section, count, step + 1, steps))
        emit(Preview(section, step + 1, latent_preview(x0)))
        _check(cancel)

    prepared = prepare_transformer(models.transformer, req, manager)  # FP8 storage, attention kernel, compile
    state.attention = prepared.attention.backend
    for message in prepared.notices:
        emit(Notice(message))

    generator = torch.Generator("cpu").manual_seed(req.seed)
    video = SegmentedVideo(output, settings.mode, overlap_frames(settings.window), req.crf,
                           _metadata(req, models.spec.name))
    try:
        emit(Stage("sampling", f"Sampling section 1 of {count}"))
        with manager.use(models.transformer), step_cache(
                models.transformer, req.step_cache, req.cache_method, req.cache_threshold, settings.steps,
                calls_per_step=1 if settings.cfg == 1 else 2) as cache:
            state.cache = cache
            for section in run_sections(models.transformer, cond, start_latent, settings, generator,
                                        end_latent=end_latent, step_callback=on_step):
                if cache is not None:
                    cache.reset()  # the next section has another context: nothing may carry over
                emit(Stage("decoding", f"Decoding section {section.index + 1} of {count}"))
                pixels = _decode_newest(section, models.vae, settings, manager)
                emit(Stage("writing", "Writing the video so far"))
                video.add(pixels, last=section.index == count - 1)
                video.write(progress)
                state.sections_done, state.frames = section.index + 1, video.frames
                del pixels
                release_free_host_memory()  # the decode's buffers: keep the process flat as the video grows
                emit(SectionDone(section.index, count, video.frames, progress, time.monotonic() - started))
                if section.index + 1 < count:
                    _check(cancel)
                    emit(Stage("sampling", f"Sampling section {section.index + 2} of {count}"))
    finally:
        video.close()
    emit(_finish(state, output, progress, started, stopped=False))


def _decode_newest(section, vae, settings, manager) -> torch.Tensor:
    """Pixels of the latents this section changed: all of them at first, later the newest span."""
    span = decode_span(section.index, section.count, settings.window, settings.mode)
    latents = section.video_latents
    if span:
        latents = latents[:, :, :span] if settings.mode == "inverted" else latents[:, :, -span:]
    with manager.use(vae):
        return decode_latents(vae, latents)


def _finish(state: _RunState, output: Path, progress: Path, started: float, stopped: bool) -> Finished:
    video = None
    if state.sections_done and progress.exists():
        os.replace(progress, output)
        video = output
    cache = state.cache
    return Finished(video, state.frames, FPS, state.sections_done, state.width, state.height, state.seed,
                    time.monotonic() - started, stopped, attention=state.attention,
                    step_cache=cache.method if cache else "", blocks_computed=cache.computed if cache else 0,
                    blocks_skipped=cache.skipped if cache else 0)


def _metadata(req: GenerationRequest, model_set: str) -> dict[str, str]:
    """Everything that decides the pixels, as JSON in the MP4's comment: a video can be made again
    from itself (the step cache and FP8 change the pixels too, so they are recorded with the rest)."""
    settings = {"app": "FramePack desktop", "model": model_set} | req.settings_dict()
    return {"title": req.prompt, "comment": json.dumps(settings, sort_keys=True)}


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled()


def _user_message(error: Exception) -> str:
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return ("The GPU ran out of memory. Try a lower resolution, a shorter window, or a smaller VRAM budget "
                "so that more of the model stays in system memory.")
    return f"Generation failed: {error}"
