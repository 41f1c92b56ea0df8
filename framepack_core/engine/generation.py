"""The work of one video as named stages, read top to bottom (`VideoPipeline.__call__`):

    1. encode the prompts      each distinct prompt once, cached
    2. encode the start        the origin (starts/): a picture, saved latents, a video's end; SigLIP
    3. prepare the transformer FP8 storage, attention kernel, compile
    4. rebuild what is done    a resumed run's finished sections, decoded again exactly
    5. sample the sections     and after each: decode what it changed, write the video so far

Models in, events out, the outcome returned; the files and the record are `run/lifecycle.py`'s. Memory
placement is a `manager.use(...)` around each stage, so nothing here moves weights itself.
"""
from __future__ import annotations

import time

import torch

from memory import ModelManager, release_free_host_memory

from ..events import Notice, Preview, SectionDone, Stage, StageName, Step
from ..failures import Cancelled
from ..media.latents import LatentsKeeper
from ..media.segments import SegmentedVideo
from ..media.video import decode_latents, latent_preview
from ..method.prompts import distinct_prompts, parse_prompt, section_prompts
from ..method.schedule import overlap_frames
from ..method.sections import Conditioning, Section, SectionSettings, run_sections
from .keyframe_inputs import KeyframeInputs, encode_keyframes
from ..models.encoders import encode_siglip, set_vae_tiling
from ..models.lora import applied_loras
from ..models.prompt_cache import cached_prompt
from .beginning import Beginning
from ..request import Request
from ..settings import SamplingMode
from ..speed.magcache import ratios_for, save_calibration
from ..speed.prepare import prepare_transformer
from ..speed.step_cache import step_cache
from .work import Made, Work


def make_video(work: Work, models, manager: ModelManager) -> Made:
    """The engine: one video through the stages below (tests hand the run path a scripted stand-in)."""
    return VideoPipeline(work, models, manager)()


def section_settings(request: Request) -> SectionSettings:
    m = request.method
    return SectionSettings(seconds=m.seconds, window=m.window, steps=m.steps, gs=m.gs, cfg=m.cfg, rs=m.rs,
                           mode=m.mode, variant=m.variant, shift=m.shift)


class VideoPipeline:
    def __init__(self, work: Work, models, manager: ModelManager):
        self.work, self.models, self.manager = work, models, manager
        self.origin = work.origin
        self.request, self.emit = work.request, work.emit
        self.settings = section_settings(work.request)
        self.count = self.settings.sections
        self.started = time.monotonic()
        # What is made so far: the outcome, should the run stop now.
        self.sections_done = self.frames = self.width = self.height = 0
        self.attention, self.fp8, self.vae_tiling, self.cache = "", "off", None, None
        self.keeper: LatentsKeeper | None = None  # the section latents' file, once the video is opened

    def __call__(self) -> Made:
        try:
            prompts = self.encode_prompts()  # 1
            beginning, keyframes = self.encode_start()  # 2
            conds = self.conditionings(*prompts, keyframes)
            self.prepare_transformer()  # 3
            video, self.keeper = self.open_files(beginning)
            try:
                self.rebuild_done(beginning, video)  # 4
                self.sample_sections(beginning, conds, keyframes, video)  # 5
            finally:
                video.close()
        except Cancelled:
            return self.made(stopped=True)
        return self.made(stopped=False)

    # 1. encode the prompts
    def encode_prompts(self) -> tuple:
        """(the prompt's timed spans, each distinct prompt encoded, the negative prompt or None)."""
        method, models, manager = self.request.method, self.models, self.manager
        self.stage(StageName.ENCODING_PROMPT, "Encoding the prompt", uses=(models.text_encoder, models.text_encoder_2))
        spans = parse_prompt(method.prompt, method.seconds, method.window)
        # Each distinct prompt once, and cached: a prompt seen before never touches the text encoders.
        encoded = {text: cached_prompt(models, text, manager) for text in distinct_prompts(spans)}
        negative = cached_prompt(models, method.negative_prompt, manager).conditioning if method.cfg != 1 else None
        for text, prompt in encoded.items():
            if prompt.truncated:
                which = f"The prompt {text[:40]!r}" if len(encoded) > 1 else "The prompt"
                self.emit(Notice(f"{which} is longer than the text encoder reads; its end was left out."))
        self.check()
        return spans, encoded, negative

    # 2. encode the start
    def encode_start(self) -> tuple[Beginning, KeyframeInputs]:
        """The origin's beginning (start and end latents, sections done, prefix) and the pictures' SigLIP
        embeddings (the start's, and the keyframes' with their latents)."""
        self.stage(StageName.ENCODING_IMAGE, "Encoding the picture", uses=(self.models.vae, self.models.image_encoder))
        beginning = self.origin.begin(self.request, self.models, self.manager)
        for message in beginning.notices:
            self.emit(Notice(message))
        self.height, self.width = beginning.pixels.shape[:2]
        with self.manager.use(self.models.image_encoder):
            image_embeds = encode_siglip(self.models.feature_extractor, self.models.image_encoder, beginning.pixels)
        keyframes = encode_keyframes(self.request, self.models, self.manager, beginning.pixels, image_embeds,
                                     self.count)
        self.check()
        return beginning, keyframes

    def conditionings(self, spans, encoded: dict, negative, keyframes: KeyframeInputs) -> list[Conditioning]:
        """Each section's conditioning: its moment's prompt (or blend of two), its picture (the start's or
        a keyframe's), the negative."""
        method = self.request.method
        plan = section_prompts(spans, method.seconds, method.window, self.settings.mode, method.prompt_blend)
        return [Conditioning(*mix_prompts(encoded, section.mix), image_embeds=keyframes.image_embeds(section.index),
                             negative=negative) for section in plan]

    # 3. prepare the transformer
    def prepare_transformer(self) -> None:
        transformer = self.models.transformer
        prepared = prepare_transformer(transformer, self.request.speed, self.manager)
        self.attention, self.fp8 = prepared.attention.backend, prepared.fp8
        for message in prepared.notices:
            self.emit(Notice(message))

    def open_files(self, beginning: Beginning) -> tuple[SegmentedVideo, LatentsKeeper]:
        """The video being made (frames copied from elsewhere around it) and the keeper of its section latents."""
        joined = beginning.joined()
        video = SegmentedVideo(self.work.video, self.settings.mode, overlap_frames(self.settings.window),
                               self.request.output.crf, self.tags(), **joined)
        keeper = LatentsKeeper(self.work.latents, self.request, self.count, beginning.start, beginning.end,
                               beginning.joins())
        return video, keeper

    # 4. rebuild what is done
    def rebuild_done(self, beginning: Beginning, video: SegmentedVideo) -> None:
        """The video so far, decoded again from the saved latents exactly as it was made; the latents
        file started."""
        done = beginning.done
        if done:
            self.stage(StageName.DECODING, f"Rebuilding the {done} finished section{'s' if done > 1 else ''}",
                       uses=(self.models.vae,))
            for index, section_latents in enumerate(beginning.replay(self.settings, self.count)):
                video.add(self.decode(beginning, index, section_latents), last=index == self.count - 1)
            video.metadata = self.tags()
            video.write(self.work.video)
            self.sections_done, self.frames = done, video.frames
            self.check()
        self.keeper.save(beginning.history.video_latents if beginning.history else None, done)

    # 5. sample the sections
    def sample_sections(self, beginning: Beginning, conds: list[Conditioning], keyframes: KeyframeInputs,
                        video: SegmentedVideo) -> None:
        request, speed, settings, transformer = self.request, self.request.speed, self.settings, self.models.transformer
        self.stage(StageName.SAMPLING, f"Sampling section {beginning.done + 1} of {self.count}", beginning.done, (transformer,))
        cache_method = "magcache" if speed.cache_calibrate else speed.cache_method  # calibrating never skips
        ratios = ratios_for(request.model, settings.steps) if cache_method == "magcache" else None
        generator = torch.Generator("cpu").manual_seed(request.method.seed)
        with applied_loras(transformer, request.method.loras), self.manager.use(transformer), step_cache(
                transformer, speed.step_cache or speed.cache_calibrate, cache_method, speed.cache_threshold,
                settings.steps, calls_per_step=1 if settings.cfg == 1 else 2, ratios=ratios,
                calibrate=speed.cache_calibrate, gates=self.manager.gates) as cache:
            self.cache = cache
            for section in run_sections(transformer, conds.__getitem__, beginning.start, settings, generator,
                                        end_latent=beginning.end, step_callback=self.on_step,
                                        resume=beginning.history, keyframes=keyframes.latents):
                if cache is not None:
                    cache.reset()  # the next section has another context: nothing may carry over
                self.decode_and_write(beginning, section, video)
                if section.index + 1 < self.count:
                    self.check()
                    self.stage(StageName.SAMPLING, f"Sampling section {section.index + 2} of {self.count}", section.index + 1,
                               (transformer,))
        if speed.cache_calibrate and cache is not None:
            self.save_calibration(cache)

    def on_step(self, section: int, step: int, steps: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        self.emit(Step(section, self.count, step + 1, steps))
        self.emit(Preview(section, step + 1, latent_preview(x0)))
        self.check()

    def decode_and_write(self, beginning: Beginning, section: Section, video: SegmentedVideo) -> None:
        """The section's new frames decoded, blended into the video, the video so far and the latents
        written: a stop or a crash from here on keeps this section."""
        index, count = section.index, self.count
        self.stage(StageName.DECODING, f"Decoding section {index + 1} of {count}", index, (self.models.vae,))
        pixels = self.decode(beginning, index, section.video_latents)
        self.stage(StageName.WRITING, "Writing the video so far", index)
        video.metadata = self.tags()  # now with the VAE tiling the decode used
        video.add(pixels, last=index == count - 1)
        video.write(self.work.video)
        self.keeper.save(section.video_latents, index + 1)
        self.sections_done, self.frames = index + 1, video.frames
        del pixels
        release_free_host_memory()  # the decode's buffers: keep the process flat as the video grows
        self.emit(SectionDone(index, count, video.frames, self.work.video, time.monotonic() - self.started,
                              video.final_prefix))

    def decode(self, beginning: Beginning, index: int, latents: torch.Tensor) -> torch.Tensor:
        """Pixels of the latents section `index` changed: all of them at first, later the newest span."""
        settings = self.settings
        span = beginning.decode_span(index, self.count, settings, latents.shape[2])
        if span:
            latents = latents[:, :, :span] if settings.mode == SamplingMode.INVERTED else latents[:, :, -span:]
        vae = self.models.vae
        with self.manager.use(vae):
            # Tiles change pixels, so one choice holds for the whole run: the request's, else what the
            # memory manager decided at the first decode (each decode meets the same memory state).
            if self.vae_tiling is None:
                tiling = self.request.speed.vae_tiling
                self.vae_tiling = self.manager.short_of_room() if tiling is None else tiling
            set_vae_tiling(vae, self.vae_tiling)
            pixels = decode_latents(vae, latents)
        return beginning.kept(index, pixels, settings)

    def save_calibration(self, cache) -> None:
        measured = cache.strategy.calibrated_ratios()
        if measured:
            model, steps = self.request.model, self.settings.steps
            where = save_calibration(model, steps, measured)
            self.emit(Notice(f"MagCache ratios for {model} at {steps} steps saved to {where}: {measured}"))

    # What every stage shares
    def stage(self, name: str, message: str, section: int | None = None, uses: tuple = ()) -> None:
        """A stage begins (the one before ends): measured for the record, and told to the caller."""
        self.work.meter.begin(name, section, planned=lambda: self.planned_bytes(uses))
        self.emit(Stage(name, message))

    def planned_bytes(self, modules: tuple) -> int | None:
        """Device bytes the memory manager planned for these models (None: it placed none of them)."""
        plans = [self.manager.planned(m) for m in modules] if self.manager.manages_device else []
        plans = [plan for plan in plans if plan is not None]
        return sum(plan.device.device_bytes for plan in plans) if plans else None

    def check(self) -> None:
        if self.work.cancel.is_set():
            raise Cancelled()

    def tags(self) -> dict[str, str]:
        """The MP4's tags: the settings, and what was used (request.remake_fields reads them back)."""
        return self.work.tags({"attention_used": self.attention, "vae_tiling_used": self.vae_tiling,
                               "fp8_used": self.fp8})

    def made(self, stopped: bool) -> Made:
        cache = self.cache
        return Made(self.sections_done, self.frames, self.width, self.height, self.attention, self.vae_tiling,
                    self.fp8, cache.method if cache else "", cache.computed if cache else 0,
                    cache.skipped if cache else 0, stopped)


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
