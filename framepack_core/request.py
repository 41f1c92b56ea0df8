"""A request for one video, in three parts, validated in one place.

- `MethodSettings`: what decides the pixels (prompt, length, seed, sampler settings, mode).
- `OutputSettings`: where the video goes and how it is encoded.
- `SpeedSettings`: how fast it is made (step cache, attention kernel, FP8, compile); some of
  these change the pixels a little, so they are recorded with the rest.

Their fields, defaults and bounds are the settings table's (framepack_core/settings.py): each field is
written out here (a reader and a type checker see `request.method.seed`), its default read from the
table, and tests/core/test_settings_table.py holds the two to the same names, order, types and defaults.
This module adds the checks that need more than a bound (the prompt's timeline, LoRA files, the output path).

Bad values raise ValueError with one clear sentence. No torch at import: the command line builds
requests before any model library is imported; validating imports the schedule (timed prompts) and,
only when LoRAs are asked for, diffusers (each file is checked against the transformer's shapes).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from PIL import Image

from .settings import (
    DEFAULT_MODES,
    DEFAULTS,
    MODEL_SETS,
    SETTINGS,
    SETTINGS_LIST,
    Part,
    SamplingMode,
    Scope,
    canonical_name,
    settings_of,
)
from .setting_values import check_number, check_value, job_fields

Picture = str | Path | Image.Image


def _checked(part) -> dict:
    """Every field of a part checked against its table entry; the values as kept (whole floats as ints)."""
    return {f.name: check_value(SETTINGS[f.name], getattr(part, f.name)) for f in fields(part)}


@dataclass(frozen=True)
class MethodSettings:
    """What decides the pixels (prompt, length, seed, sampler settings, mode)."""
    prompt: str = DEFAULTS["prompt"]  # one prompt, or timed ones: "[0s: ...] [2.5s: ...]"
    negative_prompt: str = DEFAULTS["negative_prompt"]
    seconds: float = DEFAULTS["seconds"]
    steps: int = DEFAULTS["steps"]
    seed: int = DEFAULTS["seed"]
    gs: float = DEFAULTS["gs"]  # distilled guidance
    window: int = DEFAULTS["window"]  # latent frames per section
    cfg: float = DEFAULTS["cfg"]  # real guidance; 1: off
    rs: float = DEFAULTS["rs"]  # guidance rescale
    mode: SamplingMode | None = DEFAULTS["mode"]  # None: the model set's own (validated() decides)
    resolution: int = DEFAULTS["resolution"]  # the bucket table's size
    variant: str = DEFAULTS["variant"]  # UniPC's
    shift: float | None = DEFAULTS["shift"]  # None: from the token count
    prompt_blend: int = DEFAULTS["prompt_blend"]  # sections a change of timed prompt crosses over
    loop: bool = DEFAULTS["loop"]
    loras: tuple = DEFAULTS["loras"]  # ("path", weight) pairs, or "PATH[:WEIGHT]" text

    def validated(self, model: str) -> MethodSettings:
        checked = _checked(replace(self, mode=self.mode or DEFAULT_MODES[model]))
        if checked["loop"] and checked["mode"] != SamplingMode.INVERTED:
            raise ValueError("A loop needs inverted sampling; forward (F1) sampling cannot aim at an end frame.")
        return replace(self, **checked | {"loras": _loras(self.loras, model)})


@dataclass(frozen=True)
class OutputSettings:
    """Where the video goes (`folder`: fresh names <date>-<time>_<seed>; `path`: an exact MP4) and its quality."""
    folder: Path = DEFAULTS["folder"]
    path: Path | None = DEFAULTS["path"]
    crf: int = DEFAULTS["crf"]
    upscale: int = DEFAULTS["upscale"]  # when made, also write it upscaled x2 or x4 (1: not)
    upscaler: str | None = DEFAULTS["upscaler"]  # None: the scale's default upscaler
    interpolate: int = DEFAULTS["interpolate"]  # when made, also write it at 2 or 4 times the frame rate (1: not)

    def validated(self) -> OutputSettings:
        checked = _checked(self)
        if self.path is None:
            return replace(self, **checked | {"folder": Path(self.folder)})
        path = Path(self.path)
        if path.suffix.lower() != ".mp4":
            raise ValueError(f"The output {str(path)!r} must end in .mp4.")
        if path.is_dir():
            raise ValueError(f"The output {str(path)!r} is a folder; give a file name ending in .mp4.")
        return replace(self, **checked | {"folder": path.parent, "path": path})


@dataclass(frozen=True)
class SpeedSettings:
    """How fast it is made (step cache, attention kernel, FP8, compile, budgets); some of these change the
    pixels a little, so they are recorded with the rest."""
    step_cache: bool = DEFAULTS["step_cache"]
    cache_method: str = DEFAULTS["cache_method"]  # one of settings.CACHE_METHODS
    cache_threshold: float = DEFAULTS["cache_threshold"]
    cache_calibrate: bool = DEFAULTS["cache_calibrate"]
    attention_requested: str = DEFAULTS["attention_requested"]  # auto, or a kernel by name
    fp8: str = DEFAULTS["fp8"]  # off | storage | fast
    compile: bool = DEFAULTS["compile"]
    vram_budget_gb: float | None = DEFAULTS["vram_budget_gb"]  # None: the session's
    gpus: int = DEFAULTS["gpus"]
    vae_tiling: bool | None = DEFAULTS["vae_tiling"]  # None: when GPU memory is short

    def validated(self) -> SpeedSettings:
        checked = _checked(self)
        if checked["vram_budget_gb"] == 0:  # 0: automatic, as None
            checked["vram_budget_gb"] = None
        return replace(self, **checked)


@dataclass(frozen=True)
class Request:
    """A request for one video: the model set and pictures, then three parts, validated in one place."""
    model: str = DEFAULTS["model"]
    image: Picture | None = DEFAULTS["image"]  # the start picture (a file or an opened picture)
    end_image: Picture | None = DEFAULTS["end_image"]
    keyframes: tuple = DEFAULTS["keyframes"]  # (picture, seconds, weight) triples
    image_name: str = DEFAULTS["image_name"]  # for records; found from the picture's path when empty
    method: MethodSettings = field(default_factory=MethodSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    # What follows from the rest (the prompt's timeline, the LoRA files' digests, the keyframes' sections),
    # worked out once as the request is validated: the record keeps it (Scope.RECORD), the run reads it.
    derived: dict = field(default_factory=dict, repr=False, compare=False)
    # The picture files it was given (before validation opens them): an exact --output never writes over them.
    picture_files: tuple[Path, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_fields(cls, **values) -> Request:
        """A request from flat names (`prompt=..., seconds=..., fp8=True`), each routed to its part.

        What forms, flags and saved records speak; an unknown name is a mistake, not ignored. Older
        names (a setting's aliases) are read too; recorded-only names are dropped (recomputed). The session's
        settings (--models-dir, --ram-budget) are the process's, never a video's: unknown here.
        """
        by_part = {part: {} for part in Part}
        unknown = []
        for name, value in values.items():
            setting = SETTINGS.get(canonical_name(name))
            if setting is None or setting.part is Part.SESSION:
                unknown.append(name)
            elif setting.scope is not Scope.RECORD and (name == setting.name or setting.name not in values):
                by_part[setting.part][setting.name] = value
        if unknown:
            raise ValueError(f"Unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(sorted(unknown))}.")
        parts = {attribute: kind(**by_part[part]) for part, attribute, kind in (
            (Part.METHOD, "method", MethodSettings), (Part.OUTPUT, "output", OutputSettings),
            (Part.SPEED, "speed", SpeedSettings))}
        return cls(**by_part[Part.TOP], **parts)

    def validated(self) -> Request:
        """A copy with defaults resolved and pictures opened; raises ValueError on the first bad value."""
        picture_files = self.picture_files or _picture_files(self)  # validated again: the files it was given
        if self.model not in MODEL_SETS:
            raise ValueError(f"Unknown model set {self.model!r}; choose one of {', '.join(MODEL_SETS)}.")
        method = self.method.validated(self.model)
        if self.end_image is not None and method.mode != SamplingMode.INVERTED:
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
                       speed=speed, keyframes=keyframes, picture_files=picture_files,
                       derived=_derived(method, keyframes))

    def settings(self) -> dict:
        """Everything that makes the video, as flat JSON values: what records and MP4 metadata keep,
        and what `from_fields` takes back (pictures by name only)."""
        parts = {Part.TOP: self, Part.METHOD: self.method, Part.OUTPUT: self.output, Part.SPEED: self.speed}
        out = {s.name: getattr(parts[s.part], s.name) for s in _JOB_SETTINGS}
        keyframes = [{"seconds": seconds, "weight": weight} for _, seconds, weight in self.keyframes]
        return out | {"end_image": self.end_image is not None, "keyframes": keyframes} | self.derived


_JOB_SETTINGS = settings_of(scope=Scope.JOB)  # what a record keeps of a request, in the table's order


def _derived(method: MethodSettings, keyframes: tuple) -> dict:
    """What follows from the validated settings. The prompt's times are checked here (ValueError), read once."""
    from .method.keyframes import Keyframe, keyframe_timeline
    from .method.prompts import parse_prompt, timeline  # torch (the schedule's arithmetic): only validating
    from .method.schedule import section_count
    from .models.lora_files import file_sha256

    files = [{"name": Path(path).name, "sha256": file_sha256(Path(path)), "weight": weight}
             for path, weight in method.loras]
    sections = keyframe_timeline([Keyframe(s, w) for _, s, w in keyframes],
                                 section_count(method.seconds, method.window), method.window)
    spans = timeline(parse_prompt(method.prompt, method.seconds, method.window))
    return {"prompt_spans": spans, "lora_files": files, "keyframe_sections": sections}


def _picture_files(request: Request) -> tuple[Path, ...]:
    """The files among a request's pictures as it was given them (a picture in memory has none)."""
    keys = [item.get("picture") if isinstance(item, dict) else
            str(item).rpartition("@")[0] if isinstance(item, (str, Path)) else
            item[0] if isinstance(item, (tuple, list)) and item else None for item in request.keyframes or ()]
    return tuple(Path(p) for p in (request.image, request.end_image, *keys) if isinstance(p, (str, Path)))


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
        check_number("A keyframe's time", seconds, 0, SETTINGS["seconds"].high)
        check_number("A keyframe's weight", weight, 0, 1, low_open=True)
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
        check_number(f"The weight of LoRA {Path(path).name}", weight, -10, 10)
        from .models.lora_files import check_lora  # torch and diffusers: only when a LoRA is asked for

        check_lora(path, model)
        out.append((str(path), float(weight)))
    return tuple(out)


# What a run records beside its settings: the attention kernel that ran, whether the VAE decoded
# in tiles, the FP8 mode that ran (off | storage | fast; true/false in records from before the
# modes, which validate as storage/off). A remake requests these, not the settings' "auto", an FP8
# request that an earlier run's weights overrode, or `fast` that the GPU could not run.
# {record name: setting}
USED = {s.used: s.name for s in SETTINGS_LIST if s.used}


def remake_fields(recorded: dict) -> dict:
    """`Request.from_fields` names that make a recorded video again (pictures aside).

    `recorded`: an MP4's comment (flat settings and the USED keys) or a run's JSON record (its settings,
    and at its top level what was used: `attention_used`..., or in records before them `attention`...).
    """
    used = {key: recorded.get(key) for key in USED}
    if "settings" in recorded:
        for key, name in USED.items():
            older = (name, *SETTINGS[name].aliases)  # the top level's names before `*_used`
            used[key] = next((recorded[k] for k in (key, *older) if k in recorded), None)
        recorded = recorded["settings"]
    fields_ = job_fields(recorded)
    for key, name in USED.items():
        if used[key] not in (None, ""):
            fields_[name] = used[key]
    return fields_


def _open_picture(what: str, source) -> Image.Image:
    from .media.pictures import load_picture

    if source is None or (isinstance(source, str) and not source.strip()):
        raise ValueError(f"Please give a {what}.")
    if not isinstance(source, (str, Path, Image.Image)):
        raise ValueError(f"The {what} must be a file path or a picture.")
    return load_picture(source, what)
