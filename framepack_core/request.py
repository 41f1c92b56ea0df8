"""A request for one video, in three parts, validated in one place.

- `MethodSettings`: what decides the pixels (prompt, length, seed, sampler settings, mode).
- `OutputSettings`: where the video goes and how it is encoded.
- `SpeedSettings`: how fast it is made (step cache, attention kernel, FP8, compile); some of
  these change the pixels a little, so they are recorded with the rest.

Bad values raise ValueError with one clear sentence. No torch at import: the command line builds
requests before any model library is imported; validating imports the schedule (timed prompts) and,
only when LoRAs are asked for, diffusers (each file is checked against the transformer's shapes).
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
    FP8_MODES,
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
    prompt_blend: int = 0  # sections over which the conditioning crosses over at each timed prompt change
    # LoRA files and their weights: ("path", 1.0) pairs, or "PATH[:WEIGHT]" text as the command line gives it.
    loras: tuple = ()
    loop: bool = False  # the end frame is the start picture: the MP4 repeats without a cut (inverted only)

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
        window = _integer("Window", self.window, 1, 33)
        if not isinstance(self.loop, bool):
            raise ValueError(f"The loop option must be true or false, not {self.loop!r}.")
        if self.loop and mode != "inverted":
            raise ValueError("A loop needs inverted sampling; forward (F1) sampling cannot aim at an end frame.")
        from .method.prompts import parse_prompt  # torch (the schedule's arithmetic): only once validating

        parse_prompt(self.prompt, self.seconds, window)
        loras = _loras(self.loras, model)
        return replace(self, mode=mode, seed=_integer("Seed", self.seed, 0, MAX_SEED), loras=loras,
                       prompt_blend=_integer("Prompt blend", self.prompt_blend, 0, 100),
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
    fp8: str = "off"  # FP8_MODES: FP8 (e4m3fn) weights (lossy, kept until reloaded), and FP8 arithmetic
    compile: bool = False  # torch.compile the transformer blocks (CUDA only)
    vram_budget_gb: float | None = None  # GPU memory this run may use; None (or 0): the session's, else what is free
    vae_tiling: bool | None = None  # decode the VAE in tiles; None: when memory is short (changes pixels a little)

    def validated(self) -> SpeedSettings:
        for name in ("step_cache", "compile", "cache_calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"The {name.replace('_', ' ')} option must be true or false, "
                                 f"not {getattr(self, name)!r}.")
        if self.vae_tiling is not None and not isinstance(self.vae_tiling, bool):
            raise ValueError(f"The VAE tiling option must be true, false or automatic, not {self.vae_tiling!r}.")
        _number("Step cache threshold", self.cache_threshold, 0, 1, low_open=True)
        if self.cache_method not in CACHE_METHODS:
            raise ValueError(f"Step cache must be one of {', '.join(CACHE_METHODS)}, not {self.cache_method!r}.")
        if self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"Attention must be one of {', '.join(ATTENTION_KERNELS)}, not {self.attention!r}.")
        fp8 = _FP8_BEFORE_MODES.get(str(self.fp8).lower(), self.fp8)
        if fp8 not in FP8_MODES:
            raise ValueError(f"FP8 must be one of {', '.join(FP8_MODES)}, not {self.fp8!r}.")
        budget = self.vram_budget_gb
        if budget is not None:
            _number("VRAM budget (GB)", budget, 0, 4096)
        return replace(self, fp8=fp8, vram_budget_gb=budget or None)


# FP8 was true/false before its modes (records, queued jobs, CSV cells): storage and off.
_FP8_BEFORE_MODES = {"true": "storage", "false": "off"}

_PARTS = {"method": MethodSettings, "output": OutputSettings, "speed": SpeedSettings}


@dataclass(frozen=True)
class Request:
    image: Picture | None
    model: str = "framepack"
    end_image: Picture | None = None
    # Pictures the video passes through: (picture, seconds, weight) triples, or "PATH@SECONDS[:WEIGHT]" text
    # (method/keyframes.py says which sections each conditions); inverted sampling only.
    keyframes: tuple = ()
    image_name: str = ""  # where the picture came from, for records (set by validated())
    method: MethodSettings = field(default_factory=MethodSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    speed: SpeedSettings = field(default_factory=SpeedSettings)

    @classmethod
    def from_fields(cls, **values) -> Request:
        """A request from flat names (`prompt=..., seconds=..., fp8=True`), each routed to its part.

        What forms, flags and saved records speak; an unknown name is a mistake, not ignored.
        """
        for name in DERIVED:
            values.pop(name, None)  # what settings() adds for records; recomputed from the rest
        top = {name: values.pop(name) for name in ("image", "model", "end_image", "keyframes", "image_name") if name in values}
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
        if self.end_image is not None and method.loop:
            raise ValueError("A loop ends on its start picture; leave out the end picture.")
        keyframes = _keyframes(self.keyframes, method, self.end_image is not None)
        output, speed = self.output.validated(), self.speed.validated()
        # Pictures are opened once, here, so that a broken file is refused before any work starts.
        image = _open_picture("picture", self.image)
        end_image = None if self.end_image is None else _open_picture("end frame", self.end_image)
        name = self.image_name or (Path(self.image).name if isinstance(self.image, (str, Path)) else "<picture>")
        return replace(self, image=image, end_image=end_image, image_name=name, method=method, output=output,
                       speed=speed, keyframes=keyframes)

    def settings(self) -> dict:
        """Everything that makes the video, as flat JSON values: what records and MP4 metadata keep,
        and what `from_fields` takes back (pictures by name only)."""
        out = {"model": self.model} | asdict(self.method) | {"crf": self.output.crf} | asdict(self.speed)
        keyframes = [{"seconds": seconds, "weight": weight} for _, seconds, weight in self.keyframes]
        return out | {"end_image": self.end_image is not None, "keyframes": keyframes} | _derived(self.method, self.keyframes)


# Settings that records keep but that follow from the others: the prompt's spans, the LoRA files' hashes.
DERIVED = ("prompt_spans", "lora_files", "keyframe_sections")


def _derived(method: MethodSettings, keyframes: tuple = ()) -> dict:
    from .method.keyframes import Keyframe, keyframe_timeline
    from .method.prompts import parse_prompt, timeline
    from .method.schedule import section_count
    from .models.lora_files import file_sha256

    try:
        spans = timeline(parse_prompt(method.prompt, method.seconds, method.window))
        files = [{"name": Path(path).name, "sha256": file_sha256(Path(path)), "weight": weight}
                 for path, weight in method.loras]
        sections = keyframe_timeline([Keyframe(s, w) for _, s, w in keyframes],
                                     section_count(method.seconds, method.window), method.window)
    except (ValueError, OSError, TypeError):  # a request not validated yet
        return {}
    return {"prompt_spans": spans, "lora_files": files, "keyframe_sections": sections}


def _keyframes(keyframes, method: MethodSettings, end_frame: bool) -> tuple:
    """(opened picture, seconds, weight) triples, sorted by time and checked (method/keyframes.py)."""
    from .method.keyframes import Keyframe, check_keyframes
    from .method.schedule import section_count

    out = []
    for item in keyframes or ():
        if isinstance(item, dict):
            item = (item.get("picture"), item.get("seconds"), item.get("weight", 1.0))
        elif isinstance(item, (str, Path)):
            item = _keyframe_text(str(item))
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"A keyframe is a picture, a time and an optional weight, not {item!r}.")
        picture, seconds, weight = (*item, 1.0)[:3]
        _number("A keyframe's time", seconds, 0, MAX_SECONDS)
        _number("A keyframe's weight", weight, 0, 1, low_open=True)
        out.append((picture, float(seconds), float(weight)))
    out.sort(key=lambda k: k[1])
    check_keyframes([Keyframe(s, w) for _, s, w in out], section_count(method.seconds, method.window), method.window,
                    end_frame or method.loop, method.mode)
    return tuple((_open_picture(f"keyframe at {s:g} s", p), s, w) for p, s, w in out)


def _keyframe_text(text: str) -> tuple:
    """"PATH@SECONDS[:WEIGHT]" as the command line's --keyframe gives it."""
    path, sep, when = text.rpartition("@")
    seconds, _, weight = when.partition(":")
    try:
        if not sep or not path:
            raise ValueError
        return path, float(seconds), float(weight) if weight.strip() else 1.0
    except ValueError:
        raise ValueError(f"A keyframe is PATH@SECONDS or PATH@SECONDS:WEIGHT, not {text!r}.") from None


def _loras(loras, model: str) -> tuple[tuple[str, float], ...]:
    """("path", weight) pairs from pairs or "PATH[:WEIGHT]" text, each file checked against the model's transformer."""
    if isinstance(loras, (str, Path)):
        loras = [loras]
    out = []
    for item in loras or ():
        if isinstance(item, (str, Path)):
            path, weight = str(item), 1.0
            head, sep, tail = path.rpartition(":")
            try:
                if sep and head and tail.strip():
                    path, weight = head, float(tail)
            except ValueError:
                pass  # a colon of the path itself (C:\\...): weight 1
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            path, weight = item
        else:
            raise ValueError(f"A LoRA is a file and a weight, not {item!r}.")
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ValueError(f"A LoRA must name a file, not {path!r}.")
        _number(f"The weight of LoRA {Path(path).name}", weight, -10, 10)
        from .models.lora_files import check_lora  # torch and diffusers: only when a LoRA is asked for

        check_lora(path, model)
        out.append((str(path), float(weight)))
    return tuple(out)


# What a run records beside its settings: the attention kernel that ran, whether the VAE decoded
# in tiles, the FP8 mode that ran (off | storage | fast; true/false in records from before the
# modes, which validate as storage/off). A remake requests these, not the settings' "auto", an FP8
# request that an earlier run's weights overrode, or `fast` that the GPU could not run.
USED = {"attention_used": "attention", "vae_tiling_used": "vae_tiling", "fp8_used": "fp8"}
_RECORD_ONLY = ("app", "end_image", "keyframes")  # pictures: the run's files, by name


def remake_fields(recorded: dict) -> dict:
    """`Request.from_fields` names that make a recorded video again (pictures aside).

    `recorded`: an MP4's comment (flat settings and the USED keys) or a run's JSON record.
    """
    if "settings" in recorded:  # the JSON record: the settings, and what was used at its top level
        used = {key: recorded.get(setting) for key, setting in USED.items()}
        recorded = recorded["settings"] | {key: value for key, value in used.items() if value not in (None, "")}
    fields_ = {key: value for key, value in recorded.items() if key not in _RECORD_ONLY and key not in USED}
    for key, setting in USED.items():
        if recorded.get(key) not in (None, ""):
            fields_[setting] = recorded[key]
    return fields_


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
