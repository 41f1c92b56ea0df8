"""A request for one video, in three parts, validated in one place.

- `MethodSettings`: what decides the pixels (prompt, length, seed, sampler settings, mode).
- `OutputSettings`: where the video goes and how it is encoded.
- `SpeedSettings`: how fast it is made (step cache, attention kernel, FP8, compile); some of
  these change the pixels a little, so they are recorded with the rest.

Bad values raise ValueError with one clear sentence. No torch here: the command line builds
requests before any model library is imported.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from PIL import Image

from .options import (
    ATTENTION_KERNELS,
    CACHE_METHODS,
    DEFAULT_CACHE_THRESHOLD,
    DEFAULT_MODES,
    DEFAULT_SEED,
    MAX_RESOLUTION,
    MAX_SECONDS,
    MAX_SEED,
    MAX_STEPS,
    MIN_RESOLUTION,
    MODEL_SETS,
    MODES,
    SAMPLER_VARIANTS,
)

Picture = str | Path | Image.Image


@dataclass(frozen=True)
class MethodSettings:
    prompt: str = ""
    negative_prompt: str = ""
    seconds: float = 5.0
    seed: int = DEFAULT_SEED
    steps: int = 25
    window: int = 9
    gs: float = 10.0  # distilled guidance
    cfg: float = 1.0  # real classifier-free guidance; 1 = off
    rs: float = 0.0  # guidance rescale
    resolution: int = 640
    mode: str | None = None  # None: the model set's own (inverted for FramePack, forward for F1)
    variant: str = "bh1"
    shift: float | None = None  # None: derived from the token count

    def validated(self, model: str) -> MethodSettings:
        mode = self.mode or DEFAULT_MODES[model]
        if mode not in MODES:
            raise ValueError(f"Sampling mode must be one of {', '.join(MODES)}, not {mode!r}.")
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"The {name.replace('_', ' ')} must be text.")
        _number("Length in seconds", self.seconds, low=0, high=MAX_SECONDS, low_open=True)
        _number("Distilled guidance", self.gs, 1, 32)
        _number("CFG", self.cfg, 1, 32)
        _number("Guidance rescale", self.rs, 0, 1)
        if self.shift is not None:
            _number("Shift", self.shift, 0, 100, low_open=True)
        if self.variant not in SAMPLER_VARIANTS:
            raise ValueError(f"Sampler variant must be bh1 or bh2, not {self.variant!r}.")
        return replace(self, mode=mode, seed=_integer("Seed", self.seed, 0, MAX_SEED),
                       steps=_integer("Steps", self.steps, 1, MAX_STEPS), window=_integer("Window", self.window, 1, 33),
                       resolution=_integer("Resolution", self.resolution, MIN_RESOLUTION, MAX_RESOLUTION))


@dataclass(frozen=True)
class OutputSettings:
    folder: Path = Path("outputs")  # runs get fresh names here: <date>-<time>_<seed>
    path: Path | None = None  # an exact MP4 path instead (the command line's --output)
    crf: int = 16  # H.264 quality: 0 lossless .. 51

    def validated(self) -> OutputSettings:
        crf = _integer("MP4 quality (CRF)", self.crf, 0, 51)
        if self.path is None:
            return replace(self, folder=Path(self.folder), crf=crf)
        path = Path(self.path)
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"The output {str(path)!r} must end in .mp4.")
        if path.is_dir():
            raise ValueError(f"The output {str(path)!r} is a folder; give a file name ending in .mp4.")
        return replace(self, folder=path.parent, path=path, crf=crf)


@dataclass(frozen=True)
class SpeedSettings:
    step_cache: bool = True  # skip the blocks on steps where they would change little
    cache_method: str = CACHE_METHODS[0]  # MagCache: the published figures favour it (README)
    cache_threshold: float = DEFAULT_CACHE_THRESHOLD
    cache_calibrate: bool = False  # measure MagCache's ratios for this model and step count, and save them
    attention: str = "auto"
    fp8: bool = False  # store the transformer's linear weights in FP8 (e4m3fn); lossy, kept until reloaded
    compile: bool = False  # torch.compile the transformer blocks (CUDA only)
    vram_budget_gb: float | None = None  # GPU memory this run may use; None (or 0): the session's, else what is free

    def validated(self) -> SpeedSettings:
        for name in ("step_cache", "fp8", "compile", "cache_calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"The {name.replace('_', ' ')} option must be true or false, "
                                 f"not {getattr(self, name)!r}.")
        _number("Step cache threshold", self.cache_threshold, 0, 1, low_open=True)
        if self.cache_method not in CACHE_METHODS:
            raise ValueError(f"Step cache must be one of {', '.join(CACHE_METHODS)}, not {self.cache_method!r}.")
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"Attention must be one of {', '.join(ATTENTION_KERNELS)}, not {self.attention!r}.")
        if self.vram_budget_gb is not None:
            _number("VRAM budget (GB)", self.vram_budget_gb, 0, 4096)
            if self.vram_budget_gb == 0:
                return replace(self, vram_budget_gb=None)
        return self


_PARTS = {"method": MethodSettings, "output": OutputSettings, "speed": SpeedSettings}


@dataclass(frozen=True)
class Request:
    image: Picture | None
    model: str = "framepack"
    end_image: Picture | None = None
    image_name: str = ""  # where the picture came from, for records (set by validated())
    method: MethodSettings = field(default_factory=MethodSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    speed: SpeedSettings = field(default_factory=SpeedSettings)

    @classmethod
    def from_fields(cls, **values) -> Request:
        """A request from flat names (`prompt=..., seconds=..., fp8=True`), each routed to its part.

        What forms, flags and saved records speak; an unknown name is a mistake, not ignored.
        """
        top = {name: values.pop(name) for name in ("image", "model", "end_image", "image_name") if name in values}
        parts = {}
        for part, kind in _PARTS.items():
            names = {f.name for f in fields(kind)}
            parts[part] = kind(**{name: values.pop(name) for name in list(values) if name in names})
        if values:
            raise ValueError(f"Unknown setting{'s' if len(values) > 1 else ''}: {', '.join(sorted(values))}.")
        return cls(**top, **parts)

    def validated(self) -> Request:
        """A copy with defaults resolved and pictures opened; raises ValueError on the first bad value."""
        if self.model not in MODEL_SETS:
            raise ValueError(f"Unknown model set {self.model!r}; choose one of {', '.join(MODEL_SETS)}.")
        method = self.method.validated(self.model)
        if self.end_image is not None and method.mode != "inverted":
            raise ValueError("An end frame needs inverted sampling; forward (F1) sampling cannot aim at one.")
        output, speed = self.output.validated(), self.speed.validated()
        # Pictures are opened once, here, so that a broken file is refused before any work starts.
        image = _open_picture("picture", self.image)
        end_image = None if self.end_image is None else _open_picture("end frame", self.end_image)
        name = self.image_name or (Path(self.image).name if isinstance(self.image, (str, Path)) else "<picture>")
        return replace(self, image=image, end_image=end_image, image_name=name, method=method, output=output,
                       speed=speed)

    def settings(self) -> dict:
        """Everything that makes the video, as flat JSON values: what records and MP4 metadata keep,
        and what `from_fields` takes back (pictures by name only)."""
        out = {"model": self.model} | asdict(self.method) | {"crf": self.output.crf} | asdict(self.speed)
        return out | {"end_image": self.end_image is not None}


def _open_picture(what: str, source) -> Image.Image:
    from .media.pictures import load_picture

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


def _integer(name: str, value, low: int, high: int) -> int:
    """The value as an int (sliders send whole floats); raises on anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}.")
    return int(value)
