"""The generation request, validated in one place. Bad values raise ValueError with one clear sentence."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from pathlib import Path

from PIL import Image

from .attention import BACKENDS as ATTENTION_BACKENDS
from .buckets import MAX_RESOLUTION, MIN_RESOLUTION
from .pictures import load_picture
from .sections import MODES, SectionSettings
from .step_cache import DEFAULT_THRESHOLD, METHODS as CACHE_METHODS

MAX_SECONDS = 120.0
MAX_STEPS = 100
MAX_SEED = 2**63 - 1
DEFAULT_SEED = 31337


@dataclass(frozen=True)
class GenerationRequest:
    image: str | Path | Image.Image
    prompt: str
    negative_prompt: str = ""
    seconds: float = 5.0
    seed: int = DEFAULT_SEED
    steps: int = 25
    window: int = 9
    gs: float = 10.0
    cfg: float = 1.0
    rs: float = 0.0
    resolution: int = 640
    crf: int = 16
    mode: str | None = None  # None: the model set's own (inverted for FramePack, forward for F1)
    end_image: str | Path | Image.Image | None = None
    variant: str = "bh1"
    shift: float | None = None
    image_name: str = ""  # where the picture came from, for summaries (set by validated())
    step_cache: bool = True  # skip the blocks on steps where they would change little (step_cache.py)
    cache_threshold: float = DEFAULT_THRESHOLD
    cache_method: str = "teacache"  # or "first-block" (diffusers' FirstBlockCache)
    attention: str = "auto"  # auto | sage | flash | xformers | sdpa
    fp8: bool = False  # store the transformer's linear weights in FP8 (e4m3fn); lossy, kept until reloaded
    compile: bool = False  # torch.compile the transformer blocks (CUDA only)

    def validated(self, default_mode: str = "inverted") -> GenerationRequest:
        """A copy with defaults resolved; raises ValueError on the first bad value."""
        mode = self.mode or default_mode
        if mode not in MODES:
            raise ValueError(f"Sampling mode must be one of {', '.join(MODES)}, not {mode!r}.")
        if not isinstance(self.prompt, str):
            raise ValueError("The prompt must be text.")
        _number("Length in seconds", self.seconds, low=0, high=MAX_SECONDS, low_open=True)
        _integer("Seed", self.seed, 0, MAX_SEED)
        _integer("Steps", self.steps, 1, MAX_STEPS)
        _integer("Window", self.window, 1, 33)
        _number("Distilled guidance", self.gs, 1, 32)
        _number("CFG", self.cfg, 1, 32)
        _number("Guidance rescale", self.rs, 0, 1)
        _integer("Resolution", self.resolution, MIN_RESOLUTION, MAX_RESOLUTION)
        _integer("MP4 quality (CRF)", self.crf, 0, 51)
        if self.shift is not None:
            _number("Shift", self.shift, 0, 100, low_open=True)
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"Sampler variant must be bh1 or bh2, not {self.variant!r}.")
        if self.end_image is not None and mode != "inverted":
            raise ValueError("An end frame needs inverted sampling; forward (F1) sampling cannot aim at one.")
        _speed_options(self)
        # Pictures are opened once, here, so that a broken file is refused before any work starts.
        image = _open_image("picture", self.image)
        end_image = None if self.end_image is None else _open_image("end frame", self.end_image)
        name = self.image_name or (self.image.name if isinstance(self.image, Path) else
                                   str(self.image) if isinstance(self.image, str) else "<picture>")
        return replace(self, mode=mode, seed=int(self.seed), steps=int(self.steps), window=int(self.window),
                       resolution=int(self.resolution), crf=int(self.crf), image=image, end_image=end_image,
                       image_name=name)

    def section_settings(self) -> SectionSettings:
        return SectionSettings(seconds=self.seconds, window=self.window, steps=self.steps, gs=self.gs,
                               cfg=self.cfg, rs=self.rs, mode=self.mode or "inverted",
                               variant=self.variant, shift=self.shift)

    def settings_dict(self) -> dict:
        """The settings as plain JSON values, for summaries and metadata (pictures by name only)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("image", "end_image")}
        out["end_image"] = self.end_image is not None
        return out


def _speed_options(req: GenerationRequest) -> None:
    for name in ("step_cache", "fp8", "compile"):
        if not isinstance(getattr(req, name), bool):
            raise ValueError(f"The {name.replace('_', ' ')} option must be true or false, not {getattr(req, name)!r}.")
    _number("Step cache threshold", req.cache_threshold, 0, 1, low_open=True)
    if req.cache_method not in CACHE_METHODS:
        raise ValueError(f"Step cache must be one of {', '.join(CACHE_METHODS)}, not {req.cache_method!r}.")
    if req.attention not in ATTENTION_BACKENDS:
        raise ValueError(f"Attention must be one of {', '.join(ATTENTION_BACKENDS)}, not {req.attention!r}.")


def _open_image(what: str, source) -> Image.Image:
    if source is None or (isinstance(source, str) and not source.strip()):
        raise ValueError(f"Please give a {what}.")
    if not isinstance(source, (str, Path, Image.Image)):
        raise ValueError(f"The {what} must be a file path or a picture.")
    return load_picture(source, what)


def _number(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, not {value!r}.")
    if value < low or value > high or (low_open and value == low):
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise ValueError(f"{name} must be {bound} and at most {high:g}, not {value:g}.")


def _integer(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}.")
