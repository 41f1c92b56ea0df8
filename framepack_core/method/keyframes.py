"""Keyframes and loops in inverted sampling: which section is conditioned on which picture, and how.

FramePack conditions every section on two clean 1x latents, "pre" (the start picture S, before
the blank gap) and "post" (the frame just after the section's window: the later video's first
frame, or the end frame E for the first section sampled), and on the SigLIP embedding of S.
A keyframe is conditioned the same way, at the section edge nearest its time:

- Sections in temporal order t = 0 .. n-1 (generation index g = n-1-t) each cover K latent
  frames; edge j (j = 0 .. n) is the boundary before section j, at 4jK/30 s (section_times in
  prompts.py). Edge n is the end of the video: the end frame's slot.
- A keyframe at `seconds` snaps to edge j = floor(seconds * 30 / (4K) + 1/2) (halfway goes later).
- At edge j, with weight w (1 = as strongly as FramePack's own start and end pictures):
    section j-1 (if j >= 1), which leads into the keyframe: post <- (1-w) * post + w * KF
    section j   (if j <= n-1), which leads out of it:      pre  <- (1-w) * S    + w * KF
  where KF is the keyframe's VAE latent and post is what FramePack would give that section.
- Each section touched by keyframes 1..m (m <= 2: one at each of its edges) gets the image
  embedding  emb(S) + sum_i w_i * (emb(KF_i) - emb(S)) / m;  the others keep emb(S).
- A loop is the end frame E = S (the picture the video starts from): the last frame leads into
  the first, so the MP4 repeats without a cut.

Refused, one sentence each: a keyframe at or before 0 s (the start picture is that one), past the
video's last frame, two keyframes on one edge, a keyframe on the end edge when there is an end
frame (or a loop), and any keyframe after the start in forward (F1) sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from framepack_core.settings import FPS, SamplingMode

from .history import PackedContext


@dataclass(frozen=True)
class Keyframe:
    seconds: float  # asked for, in the finished video
    weight: float = 1.0


@dataclass(frozen=True)
class SectionKeyframes:
    """The keyframes one section is conditioned on: (keyframe index, weight), or None."""
    pre: tuple[int, float] | None = None
    post: tuple[int, float] | None = None

    @property
    def touched(self) -> tuple[tuple[int, float], ...]:
        return tuple(k for k in (self.pre, self.post) if k is not None)


@dataclass(frozen=True)
class KeyframeLatents:
    """What run_sections needs: the plan (generation order) and each keyframe's latent (1, C, 1, h, w)."""
    plan: list[SectionKeyframes]
    latents: list[torch.Tensor]

    def context(self, index: int, context: PackedContext) -> PackedContext:
        return replace(context, clean=keyframe_clean(context.clean, self.plan[index], self.latents))


def edge_seconds(edge: int, window: int) -> float:
    return 4 * edge * window / FPS


def snap_edge(seconds: float, window: int) -> int:
    return math.floor(seconds * FPS / (4 * window) + 0.5)


def check_keyframes(keyframes: list[Keyframe], sections: int, window: int, end_frame: bool, mode: SamplingMode) -> None:
    """ValueError (one sentence) for keyframes that cannot be made; see the module's note."""
    if keyframes and mode != SamplingMode.INVERTED:
        raise ValueError("Keyframes after the start need inverted sampling; forward (F1) sampling cannot aim at them.")
    last = 4 * sections * window / FPS  # the last frame's time
    edges = {}
    for key in keyframes:
        if not isinstance(key.seconds, (int, float)) or not math.isfinite(key.seconds) or key.seconds <= 0:
            raise ValueError(f"A keyframe's time must be after 0 s (the start picture is the keyframe at 0 s), "
                             f"not {key.seconds!r}.")
        if key.seconds > last + 1e-9:
            raise ValueError(f"The keyframe at {key.seconds:g} s is past the end of the video ({last:.2f} s).")
        if not isinstance(key.weight, (int, float)) or not 0 < key.weight <= 1:
            raise ValueError(f"A keyframe's weight must be above 0 and at most 1, not {key.weight!r}.")
        edge = snap_edge(key.seconds, window)
        if edge in edges:
            raise ValueError(f"The keyframes at {edges[edge]:g} s and {key.seconds:g} s fall on the same section edge "
                             f"({edge_seconds(edge, window):.2f} s); put them at least one section "
                             f"({edge_seconds(1, window):.2f} s) apart.")
        if edge == sections and end_frame:
            raise ValueError(f"The keyframe at {key.seconds:g} s falls on the end frame "
                             f"({edge_seconds(edge, window):.2f} s); give one or the other.")
        edges[edge] = key.seconds


def plan_keyframes(keyframes: list[Keyframe], sections: int, window: int) -> list[SectionKeyframes]:
    """Each section's keyframes, in generation order (index g: temporal position n-1-g). Checked first."""
    temporal = [SectionKeyframes() for _ in range(sections)]
    for index, key in enumerate(keyframes):
        edge = snap_edge(key.seconds, window)
        if edge >= 1:
            temporal[edge - 1] = replace(temporal[edge - 1], post=(index, key.weight))
        if edge <= sections - 1:
            temporal[edge] = replace(temporal[edge], pre=(index, key.weight))
    return temporal[::-1]


def keyframe_clean(clean: torch.Tensor, section: SectionKeyframes, latents: list[torch.Tensor]) -> torch.Tensor:
    """The section's clean 1x latents (1, C, 2, h, w) = pre ++ post, with its keyframes blended in."""
    pre, post = clean[:, :, :1], clean[:, :, 1:]
    if section.pre is not None:
        index, weight = section.pre
        pre = (1 - weight) * pre + weight * latents[index].to(pre)
    if section.post is not None:
        index, weight = section.post
        post = (1 - weight) * post + weight * latents[index].to(post)
    return torch.cat([pre, post], dim=2)


def keyframe_image_embeds(start: torch.Tensor, section: SectionKeyframes, embeds: list[torch.Tensor]) -> torch.Tensor:
    """emb(S) + sum_i w_i (emb(KF_i) - emb(S)) / m over the m keyframes touching the section; emb(S) if none."""
    touched = section.touched
    if not touched:
        return start
    return start + sum(weight * (embeds[index].to(start) - start) for index, weight in touched) / len(touched)


def keyframe_timeline(keyframes: list[Keyframe], sections: int, window: int) -> list[dict]:
    """Plain values for records and the page: where each keyframe lands and which sections it conditions."""
    out = []
    for index, key in enumerate(keyframes):
        edge = snap_edge(key.seconds, window)
        conditions = ([{"section": edge - 1, "as": "post"}] if edge >= 1 else []) + \
                     ([{"section": edge, "as": "pre"}] if edge <= sections - 1 else [])
        out.append({"keyframe": index + 1, "seconds": key.seconds, "weight": key.weight,
                    "at": round(edge_seconds(edge, window), 3), "sections": conditions})
    return out
