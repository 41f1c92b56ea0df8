"""The section loop on its own: transformer + conditioning tensors + start latent -> latents.

No encoders, no VAE, no files: this is the part that must reproduce the published
algorithm tensor for tensor, so it is kept free of everything else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch

from framepack_core.settings import DEFAULTS, MODES, SamplingMode

from .history import ForwardHistory, InvertedHistory, PackedContext
from .sampler import flux_mu, flux_sigmas, sample_unipc
from .schedule import (
    LATENT_CHANNELS,
    forward_layout,
    inverted_layout,
    latent_paddings,
    section_count,
)


class PromptConditioning(NamedTuple):
    embeds: torch.Tensor  # (1, 512, D) Llama features, zero padded
    mask: torch.Tensor  # (1, 512) bool, True on real tokens
    pooled: torch.Tensor  # (1, Dp) CLIP-L pooler output


@dataclass(frozen=True)
class Conditioning:
    prompt_embeds: torch.Tensor
    prompt_mask: torch.Tensor
    pooled: torch.Tensor
    image_embeds: torch.Tensor  # (1, N, Di) SigLIP last hidden state
    negative: PromptConditioning | tuple | None = None  # needed only when cfg != 1


@dataclass(frozen=True)
class SectionSettings:
    """The method's settings for the section loop; defaults: the settings table's (framepack_core/settings.py)."""
    seconds: float = DEFAULTS["seconds"]
    window: int = DEFAULTS["window"]
    steps: int = DEFAULTS["steps"]
    gs: float = DEFAULTS["gs"]  # distilled guidance
    cfg: float = DEFAULTS["cfg"]  # real classifier-free guidance; 1 = off (one transformer call per step)
    rs: float = DEFAULTS["rs"]  # guidance rescale
    mode: SamplingMode = SamplingMode.INVERTED
    variant: str = DEFAULTS["variant"]
    shift: float | None = DEFAULTS["shift"]  # None = derived from the token count

    @property
    def sections(self) -> int:
        return section_count(self.seconds, self.window)


@dataclass(frozen=True)
class Section:
    index: int  # 0-based, in generation order
    count: int
    latents: torch.Tensor  # exactly what this section added to the history
    video_latents: torch.Tensor  # every latent frame generated so far, in temporal order


@dataclass(frozen=True)
class SavedSections:
    """Where a run stopped: `done` sections sampled, and the video latents they made (temporal order,
    `Section.video_latents` of the last one). With `done == 0` and forward sampling, `video_latents`
    may be any video's latents to continue (extending a finished video)."""
    done: int
    video_latents: torch.Tensor


# (section index, step, steps, x, x0) after every sampling step; raising stops the run.
SectionStepCallback = Callable[[int, int, int, torch.Tensor, torch.Tensor], None]


def make_denoiser(transformer, cond: Conditioning, context: PackedContext, settings: SectionSettings):
    """D(x, sigma) -> x0 for one section (METHOD.md "Denoiser"); the sampler state stays float32."""
    dtype, device = transformer.dtype, transformer.device

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype)

    shared = dict(
        image_embeds=cast(cond.image_embeds),
        indices_latents=context.layout.window.to(device),
        latents_clean=cast(context.clean),
        indices_latents_clean=context.layout.clean.to(device),
        latents_history_2x=cast(context.context_2x),
        indices_latents_history_2x=context.layout.context_2x.to(device),
        latents_history_4x=cast(context.context_4x),
        indices_latents_history_4x=context.layout.context_4x.to(device),
        guidance=torch.tensor([settings.gs * 1000.0]).to(device=device, dtype=dtype),
        return_dict=False,
    )

    def prompt_args(embeds, mask, pooled) -> dict:
        return dict(
            encoder_hidden_states=cast(embeds),
            encoder_attention_mask=mask.to(device),
            pooled_projections=cast(pooled),
        )

    positive = prompt_args(cond.prompt_embeds, cond.prompt_mask, cond.pooled)
    negative = None
    if settings.cfg != 1:
        if cond.negative is None:
            raise ValueError("real CFG (cfg != 1) needs a negative prompt conditioning")
        negative = prompt_args(*cond.negative)

    def velocity(x_in, timestep, prompt) -> torch.Tensor:
        return transformer(hidden_states=x_in, timestep=timestep, **prompt, **shared)[0].float()

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x_in = cast(x)
        timestep = (sigma * 1000.0).to(device=device, dtype=dtype)
        pair = getattr(transformer, "framepack_guided_pair", None)  # parallel/guidance.py: two processes
        if negative is not None and pair is not None:
            v_pos, v_neg = pair(lambda prompt: velocity(x_in, timestep, prompt), positive, negative)
        else:
            v_pos = velocity(x_in, timestep, positive)
            v_neg = velocity(x_in, timestep, negative) if negative is not None else None
        v = v_pos if v_neg is None else v_neg + settings.cfg * (v_pos - v_neg)
        if settings.rs > 0:
            dims = list(range(1, v.ndim))
            rescaled = v * (v_pos.std(dim=dims, keepdim=True) / v.std(dim=dims, keepdim=True))
            v = settings.rs * rescaled + (1 - settings.rs) * v
        # From the x the transformer saw (rounded to its dtype), as the published wrapper: in bf16
        # the unrounded float32 x would move a 3-section video's latents by about 3e-2.
        return x_in.float() - v * sigma.reshape(-1, 1, 1, 1, 1).to(x.device)

    return denoise


@torch.no_grad()
def run_sections(
    transformer,
    cond: Conditioning | Callable[[int], Conditioning],
    start_latent: torch.Tensor,
    settings: SectionSettings,
    generator: torch.Generator,
    end_latent: torch.Tensor | None = None,
    step_callback: SectionStepCallback | None = None,
    resume: SavedSections | None = None,
    keyframes=None,
) -> Iterator[Section]:
    """Yield each section's latents in generation order (inverted: end of video first).

    `cond` is one conditioning for every section, or a function of the section index (generation
    order) giving each its own: a prompt per moment (method/prompts.py).
    `resume` continues from a saved state: its sections are not sampled again, their noise is
    drawn and discarded so the generator stands where it stood, and the result is the same
    tensors as the run that never stopped.
    `keyframes` (method/keyframes.py KeyframeLatents, inverted only): blends keyframes into the
    sections' clean latents; their image embeddings come with `cond`.
    """
    if settings.mode not in MODES:
        raise ValueError(f"unknown sampling mode {settings.mode!r}; use one of {tuple(map(str, MODES))}")
    if end_latent is not None and settings.mode != SamplingMode.INVERTED:
        raise ValueError("an end frame needs inverted sampling (forward sampling cannot aim at one)")
    count, window = settings.sections, settings.window
    _, _, _, h, w = start_latent.shape
    sigmas = flux_sigmas(settings.steps, flux_mu(window * h * w // 4, settings.shift))
    device = transformer.device
    history, layouts = _history_and_layouts(settings, start_latent, end_latent)
    done = _restore(history, resume, count, generator, (1, LATENT_CHANNELS, window, h, w))

    for index, layout in enumerate(layouts):
        if index < done:
            continue
        context = history.context(layout, first_section=index == 0)
        if keyframes is not None:
            context = keyframes.context(index, context)
        denoise = make_denoiser(transformer, cond(index) if callable(cond) else cond, context, settings)
        # Noise is drawn on the CPU generator, in section order, so a seed fixes the video on any device.
        noise = torch.randn((1, LATENT_CHANNELS, window, h, w), generator=generator, dtype=torch.float32)

        callback = None
        if step_callback is not None:
            def callback(i, n, x, x0, index=index):
                step_callback(index, i, n, x, x0)

        x = sample_unipc(denoise, noise.to(device), sigmas.to(device), settings.variant, callback).cpu()
        if settings.mode == SamplingMode.INVERTED and index == count - 1:
            x = torch.cat([history.start, x], dim=2)
        history.add(x)
        yield Section(index, count, x, history.video())


def _history_and_layouts(settings: SectionSettings, start_latent: torch.Tensor, end_latent: torch.Tensor | None):
    """The latent history for the mode, and each section's index layout in generation order."""
    if settings.mode == SamplingMode.INVERTED:
        history = InvertedHistory(start_latent, end_latent)
        return history, [inverted_layout(p, settings.window) for p in latent_paddings(settings.sections)]
    return ForwardHistory(start_latent), [forward_layout(settings.window)] * settings.sections


def _restore(history, resume: SavedSections | None, count: int, generator: torch.Generator, noise_shape) -> int:
    """Sections already done: their latents back in the history, their noise drawn and discarded."""
    if resume is None or not (resume.done or resume.video_latents.shape[2]):
        return 0
    done = resume.done
    if not 0 <= done <= count:
        raise ValueError(f"cannot resume after section {done} of {count}")
    history.restore(resume.video_latents)
    for _ in range(done):  # each finished section drew exactly this much noise
        torch.randn(noise_shape, generator=generator, dtype=torch.float32)
    return done
