"""The work of one video, stage by stage: encode the prompt and picture, sample section by section,
decode what each section changed, and write the video so far.

Models in, events out; the files and the record are `run.py`'s. Memory placement is a
`manager.use(...)` around each stage, so nothing here moves weights itself.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from memory import ModelManager, release_free_host_memory

from .events import Event, Notice, Preview, SectionDone, Stage, Step
from .failures import Cancelled
from .media.pictures import crop_to_bucket, resize_and_center_crop
from .media.segments import SegmentedVideo
from .media.video import decode_latents, latent_preview
from .method.prompts import distinct_prompts, parse_prompt, section_prompts
from .method.schedule import decode_span, overlap_frames
from .continuation import Continuation, replay
from .extension import extension_base
from .media.latents import LatentsKeeper
from .method.sections import Conditioning, SavedSections, SectionSettings, run_sections
from .keyframe_inputs import encode_keyframes
from .models.encoders import encode_latent, encode_siglip
from .models.lora import applied_loras
from .models.prompt_cache import cached_prompt
from .request import Request
from .speed.prepare import prepare_transformer
from .speed.magcache import ratios_for, save_calibration
from .speed.step_cache import step_cache


@dataclass
class Progress:
    """What the run has made so far: what a stop or a failure reports."""
    sections_done: int = 0
    frames: int = 0
    width: int = 0
    height: int = 0
    attention: str = ""  # the kernel that ran
    vae_tiling: bool | None = None  # whether the VAE decoded in tiles (None before the first decode)
    fp8: str = "off"  # the FP8 mode that ran: off | storage | fast
    cache: object = None  # the step cache, for its counts of block evaluations
    notices: list[str] = field(default_factory=list)


def section_settings(request: Request) -> SectionSettings:
    m = request.method
    return SectionSettings(seconds=m.seconds, window=m.window, steps=m.steps, gs=m.gs, cfg=m.cfg, rs=m.rs,
                           mode=m.mode, variant=m.variant, shift=m.shift)


def make_video(request: Request, models, manager: ModelManager, progress_video: Path, metadata: dict,
               emit: Callable[[Event], None], cancel: threading.Event, progress: Progress,
               latents: Path | None = None, continuation: Continuation | None = None) -> None:
    """Sample every section into `progress_video`, rewritten after each; returns when the video is done.

    `latents`: where the section latents are kept (rewritten after each section). `continuation`:
    resume from saved latents, or extend a video (continuation.py)."""
    method, speed = request.method, request.speed
    started = time.monotonic()
    settings = section_settings(request)

    def check() -> None:
        if cancel.is_set():
            raise Cancelled()

    emit(Stage("encoding_prompt", "Encoding the prompt"))
    spans = parse_prompt(method.prompt, method.seconds, method.window)
    # Each distinct prompt once, and cached: a prompt seen before never touches the text encoders.
    encoded = {text: cached_prompt(models, text, manager) for text in distinct_prompts(spans)}
    negative = cached_prompt(models, method.negative_prompt, manager).conditioning if method.cfg != 1 else None
    for text, prompt in encoded.items():
        if prompt.truncated:
            which = f"The prompt {text[:40]!r}" if len(encoded) > 1 else "The prompt"
            _notice(emit, progress, f"{which} is longer than the text encoder reads; its end was left out.")
    check()

    emit(Stage("encoding_image", "Encoding the picture"))
    base = None  # what the sections continue from
    if continuation is not None and continuation.extends:
        base = extension_base(continuation, models, manager, request, settings.window)
        pixels, start_latent, end_latent = base.pixels, base.start, None
    else:
        pixels = crop_to_bucket(request.image, method.resolution)
    progress.height, progress.width = pixels.shape[:2]
    saved = continuation.saved if continuation is not None else None
    if saved is not None:  # resuming: the latents the run started from, as it saved them
        start_latent, end_latent = saved.start, saved.end
    elif base is None:
        with manager.use(models.vae):
            # One picture never needs tiles: encoded whole, the start latent does not depend on memory.
            _set_vae_tiling(models.vae, False)
            start_latent = encode_latent(models.vae, pixels)
            end_latent = None
            if request.end_image is not None:
                end_pixels = resize_and_center_crop(request.end_image, progress.width, progress.height)
                end_latent = encode_latent(models.vae, end_pixels)
            if method.loop:  # the video leads back into its first frame
                end_latent = start_latent
    with manager.use(models.image_encoder):
        image_embeds = encode_siglip(models.feature_extractor, models.image_encoder, pixels)
    keyframes = encode_keyframes(request, models, manager, pixels, image_embeds, settings.sections)
    check()

    plan = section_prompts(spans, method.seconds, method.window, settings.mode, method.prompt_blend)
    conds = [Conditioning(*mix_prompts(encoded, section.mix), image_embeds=keyframes.image_embeds(section.index),
                          negative=negative) for section in plan]
    count = settings.sections

    def on_step(section, step, steps, x, x0):
        emit(Step(section, count, step + 1, steps))
        emit(Preview(section, step + 1, latent_preview(x0)))
        check()

    prepared = prepare_transformer(models.transformer, speed, manager)  # FP8 storage, attention kernel, compile
    progress.attention, progress.fp8 = prepared.attention.backend, prepared.fp8
    for message in prepared.notices:
        _notice(emit, progress, message)

    def tags() -> dict[str, str]:  # the settings, and what was used: request.remake_fields reads them back
        used = {"attention_used": progress.attention, "vae_tiling_used": progress.vae_tiling, "fp8_used": progress.fp8}
        return mp4_tags(metadata | used)

    generator = torch.Generator("cpu").manual_seed(method.seed)
    new_frames = continuation.new_frames if base else None  # an extension at another frame rate: its length cut
    video = SegmentedVideo(progress_video, settings.mode, overlap_frames(settings.window), request.output.crf,
                           tags(), prefix=[base.source] if base else None, fps=base.fps if base else None,
                           prefix_frames=base.frames if base else 0, new_frames=new_frames)
    keeper = LatentsKeeper(latents, request, count, start_latent, end_latent, base, new_frames=new_frames)
    resume = SavedSections(saved.done, saved.video) if saved is not None else base.resume() if base else None

    def decode(index: int, section_latents: torch.Tensor) -> torch.Tensor:
        return _decode_newest(index, count, section_latents, models.vae, settings, manager, base, speed.vae_tiling,
                              progress)

    try:
        done = resume.done if resume else 0
        if done:  # the video so far, rebuilt from the saved latents exactly as it was made
            emit(Stage("decoding", f"Rebuilding the {done} finished section{'s' if done > 1 else ''}"))
            for index, section_latents in enumerate(replay(resume, settings, count, base)):
                video.add(decode(index, section_latents), last=index == count - 1)
            video.metadata = tags()
            video.write(progress_video)
            progress.sections_done, progress.frames = done, video.frames
            check()
        keeper.save(resume.video_latents if resume else None, done)
        emit(Stage("sampling", f"Sampling section {done + 1} of {count}"))
        cache_method = "magcache" if speed.cache_calibrate else speed.cache_method  # calibrating never skips
        ratios = ratios_for(request.model, settings.steps) if cache_method == "magcache" else None
        with applied_loras(models.transformer, method.loras), manager.use(models.transformer), step_cache(
                models.transformer, speed.step_cache or speed.cache_calibrate, cache_method, speed.cache_threshold,
                settings.steps, calls_per_step=1 if settings.cfg == 1 else 2, ratios=ratios,
                calibrate=speed.cache_calibrate, gates=manager.gates) as cache:
            progress.cache = cache
            for section in run_sections(models.transformer, conds.__getitem__, start_latent, settings, generator,
                                        end_latent=end_latent, step_callback=on_step, resume=resume,
                                        keyframes=keyframes.latents):
                if cache is not None:
                    cache.reset()  # the next section has another context: nothing may carry over
                emit(Stage("decoding", f"Decoding section {section.index + 1} of {count}"))
                pixels = decode(section.index, section.video_latents)
                emit(Stage("writing", "Writing the video so far"))
                video.metadata = tags()  # now with the VAE tiling the decode used
                video.add(pixels, last=section.index == count - 1)
                video.write(progress_video)
                keeper.save(section.video_latents, section.index + 1)
                progress.sections_done, progress.frames = section.index + 1, video.frames
                del pixels
                release_free_host_memory()  # the decode's buffers: keep the process flat as the video grows
                emit(SectionDone(section.index, count, video.frames, progress_video, time.monotonic() - started))
                if section.index + 1 < count:
                    check()
                    emit(Stage("sampling", f"Sampling section {section.index + 2} of {count}"))
        if speed.cache_calibrate and cache is not None:
            measured = cache.strategy.calibrated_ratios()
            if measured:
                where = save_calibration(request.model, settings.steps, measured)
                _notice(emit, progress, f"MagCache ratios for {request.model} at {settings.steps} steps saved to "
                                        f"{where}: {measured}")
    finally:
        video.close()


# Bounds on what the MP4 carries. Players and readers (imageio-ffmpeg among them) parse the tags as
# text and give up on huge ones; the run's JSON record beside the video keeps the prompt whole.
TITLE_CHARS = 200
PROMPT_CHARS = 65_536  # far past what the text encoders read (256 Llama tokens, 77 CLIP tokens)


def mp4_tags(settings: dict) -> dict[str, str]:
    """The MP4's title (the prompt's first line) and comment (every setting as JSON)."""
    prompt = settings.get("prompt", "")
    if len(prompt) > PROMPT_CHARS:
        settings = settings | {"prompt": prompt[:PROMPT_CHARS], "prompt_cut": True}
    first_line = prompt.strip().split("\n", 1)[0] if prompt.strip() else ""
    title = first_line if len(first_line) <= TITLE_CHARS else first_line[:TITLE_CHARS - 1] + "…"
    return {"title": title, "comment": json.dumps(settings, sort_keys=True)}


def mix_prompts(encoded: dict, mix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeds, mask, pooled) of a section's prompt mix: one prompt as encoded; a blend of two, linear
    in the features (each zero beyond its own tokens) with the tokens of either unmasked."""
    if len(mix) == 1:
        return tuple(encoded[mix[0][0]].conditioning)
    parts = [(encoded[text].conditioning, weight) for text, weight in mix]
    embeds = sum(c.embeds * w for c, w in parts)
    pooled = sum(c.pooled * w for c, w in parts)
    mask = torch.stack([c.mask for c, _ in parts]).any(dim=0)
    return embeds, mask, pooled


def _decode_newest(index: int, count: int, latents: torch.Tensor, vae, settings: SectionSettings,
                   manager: ModelManager, base, tiling: bool | None, progress: Progress) -> torch.Tensor:
    """Pixels of the latents this section changed: all of them at first, later the newest span.

    Extending, the first section decodes the newest two windows too but keeps only its own frames:
    the source's frames stay as they are."""
    span = decode_span(index, count, settings.window, settings.mode)
    if base is not None and index == 0:
        span = min(2 * settings.window, latents.shape[2])
    if span:
        latents = latents[:, :, :span] if settings.mode == "inverted" else latents[:, :, -span:]
    with manager.use(vae):
        # Tiles change pixels, so one choice holds for the whole run: the request's, else what the
        # memory manager decided at the first decode (each decode meets the same memory state).
        if progress.vae_tiling is None:
            progress.vae_tiling = manager.short_of_room() if tiling is None else tiling
        _set_vae_tiling(vae, progress.vae_tiling)
        pixels = decode_latents(vae, latents)
    if base is not None:
        if index == 0:
            pixels = pixels[:, :, -4 * settings.window:]
        pixels = base.to_source_size(pixels)
    return pixels


def _set_vae_tiling(vae, tiled: bool) -> None:
    if hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if tiled else vae.disable_tiling()


def _notice(emit, progress: Progress, message: str) -> None:
    progress.notices.append(message)
    emit(Notice(message))
