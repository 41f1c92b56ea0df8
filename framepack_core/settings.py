"""Every setting a user can name, once: its part, type, default, bounds, help, flag, page widget and scope.

Made from `SETTINGS`: every command's flags (ui/flags.py), the page's widgets and their ranges (ui/layout.py,
ui/handlers.py), `Request.from_fields` and the part dataclasses' validation (request.py, whose fields are
written out with the defaults read from here; a test holds them equal), the session's flags
(engine/session_config.py), the queue's import columns (jobs/intake.py), and what a resume, an extension or
a remake takes back (starts/, ui/cli.py, request.py). Adding a setting is one entry here, its field in
request.py, plus its use in the method.

Plain Python: the command line's parser imports this before anything heavy (`app.py --help` stays fast).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


# --- the vocabulary: what the choices are called ---------------------------------------------------------------
class SamplingMode(StrEnum):
    """The order a video's sections are sampled in. str-valued: records, MP4 tags, latents files and the
    queue keep the same words ("inverted", "forward") as before it was an enum."""
    INVERTED = "inverted"  # from the end back towards the start picture (anti-drifting; also aims at an end frame)
    FORWARD = "forward"  # from the start picture on (F1; how a finished video is extended)


# Each model set's own sampling order: the I2V checkpoint was trained for inverted sampling,
# F1 for forward sampling (lllyasviel/FramePack, demo_gradio.py and demo_gradio_f1.py).
DEFAULT_MODES = {"framepack": SamplingMode.INVERTED, "framepack-f1": SamplingMode.FORWARD,
                 "tiny": SamplingMode.INVERTED}
MODEL_SETS = tuple(DEFAULT_MODES)  # the model sets' names (models/sets.py: what each is made of)
PUBLISHED_MODEL_SETS = ("framepack", "framepack-f1")  # real weights; `tiny` is built locally, for trying the app
MODES = tuple(SamplingMode)
SAMPLER_VARIANTS = ("bh1", "bh2")
ATTENTION_KERNELS = ("auto", "sage", "flash", "xformers", "sdpa")
# storage: the blocks' weights kept in FP8, multiplied in bf16; fast: multiplied in FP8 too
# (compute capability 8.9+). Records from before the modes say true (storage) or false (off).
FP8_MODES = ("off", "storage", "fast")
CACHE_METHODS = ("magcache", "teacache", "first-block")  # the first is the default (README: why)

FPS = 30  # the published models' frame rate
# The published models' sizes: their bucket table's (method/buckets.py) and their latent frames per section.
TRAINED_RESOLUTION, TRAINED_WINDOW = 640, 9
MIN_RESOLUTION, MAX_RESOLUTION = 128, 1536


class Part(StrEnum):
    """Where a setting lives: at a `Request`'s top level, in one of its three parts, or in the session."""
    TOP = "top"  # the pictures and the model set
    METHOD = "method"  # what decides the pixels
    OUTPUT = "output"  # where the video goes and how it is encoded
    SPEED = "speed"  # how fast it is made (some of these change the pixels a little, so they are recorded)
    SESSION = "session"  # never in a Request: the process's own (engine/session_config.py), its scope SESSION


class Scope(StrEnum):
    """Which runs a setting reaches beyond the one it was given for."""
    JOB = "job"  # the video's own: recorded, queued with a job, taken back by a remake, a resume or an extension
    RUN = "run"  # given with each run, never a recorded setting: the pictures (kept as files), where the video goes
    RECORD = "record"  # recorded only: follows from the others, never taken back
    SESSION = "session"  # every run of the process: a flag given once (where the weights are, the RAM budget),
    #                      never a request's, never recorded or queued


class SettingKind(StrEnum):
    """What a setting's value is: how flags parse it, requests check it and records hold it."""
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TEXT = "text"
    CHOICE = "choice"  # one of the setting's `choices`
    PATH = "path"
    PICTURE = "picture"  # a file or an opened picture (records keep whether there was one; the run keeps the file)
    LORAS = "loras"  # (file, weight) pairs
    KEYFRAMES = "keyframes"  # (picture, seconds, weight) triples
    RECORD = "record"  # recorded only (Scope.RECORD): what follows from the rest


class WidgetKind(StrEnum):
    """Which gradio component shows a setting on the page (ui/layout.py makes each)."""
    SLIDER = "slider"
    NUMBER = "number"
    CHECKBOX = "checkbox"
    DROPDOWN = "dropdown"
    RADIO = "radio"
    TEXT = "text"
    IMAGE = "image"
    LORAS = "loras"
    KEYFRAMES = "keyframes"


@dataclass(frozen=True)
class Widget:
    """How the page shows a setting. `low`/`high`: the page's range where it is narrower than the validator's."""
    kind: WidgetKind
    label: str
    group: str  # where on the page: start | settings | model | creative | end (ui/layout.py places the groups)
    low: float | None = None
    high: float | None = None
    step: float | None = None
    info: str = ""
    auto: object = None  # the page's value that stands for None (a radio offers it as "auto")
    options: dict = field(default_factory=dict, hash=False)  # more for the component (placeholder, lines, height)

    def __post_init__(self):  # a kind the page has no component for is refused when the table is read
        object.__setattr__(self, "kind", WidgetKind(self.kind))


@dataclass(frozen=True)
class Setting:
    name: str  # the flat name: `Request.from_fields`, records, import columns
    part: Part
    kind: SettingKind
    default: object
    help: str  # the flag's help; also the page's hint when its widget has none
    label: str = ""  # what messages call it (default: the name in words)
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low bound itself is refused
    choices: tuple = ()
    optional: bool = False  # None is a value: decided later (by the model set, by memory, ...)
    flag: str | None = None  # the command line's flag; None: not a flag
    flag_values: dict | None = None  # the flag's words and the values they stand for (--vae-tiling auto/on/off)
    flag_default: object = ...  # the flag's default when it is not the setting's (...: the setting's)
    flag_const: object = None  # the value of the flag given without one (--fp8 alone: storage)
    metavar: str | None = None
    widget: Widget | None = None  # None: not on the page
    scope: Scope = Scope.JOB
    extends: bool = True  # an extension takes it from its command line (else: the source's own, or fixed by it)
    aliases: tuple = ()  # older names that `from_fields` still reads (records written before a rename)
    legacy: tuple = ()  # (older value, today's) pairs that validation reads as today's (fp8: true -> storage;
    #                     words in any case)
    used: str | None = None  # the record's and the MP4's name for the value a run actually used
    words: str = field(init=False, repr=False, compare=False)  # what messages call it: its label, else its name

    def __post_init__(self):  # a kind no reader knows is refused when the table is read
        object.__setattr__(self, "kind", SettingKind(self.kind))
        object.__setattr__(self, "words", self.label or self.name.replace("_", " "))

    @property
    def repeats(self) -> bool:
        """A flag given once per item (--lora, --keyframe)."""
        return self.kind in (SettingKind.LORAS, SettingKind.KEYFRAMES)

    @property
    def dest(self) -> str | None:
        """The flag's attribute on argparse's namespace."""
        return self.flag.removeprefix("--no-").removeprefix("--").replace("-", "_") if self.flag else None

    @property
    def cli_default(self):
        return self.default if self.flag_default is ... else self.flag_default


_M, _O, _S, _T, _X = Part.METHOD, Part.OUTPUT, Part.SPEED, Part.TOP, Part.SESSION
_K, _W = SettingKind, WidgetKind

SETTINGS_LIST = (
    # --- top level: the model set and the pictures ---
    Setting("model", _T, _K.CHOICE, "framepack", choices=MODEL_SETS, flag="--model", label="Model set",
            help="model set: framepack (inverted sampling), framepack-f1 (forward), "
                 "tiny (small random weights built locally, for trying the app without downloads)",
            widget=Widget(_W.DROPDOWN, "Model set", "model", options={"choice_labels": {
                "framepack": "FramePack I2V", "framepack-f1": "FramePack F1", "tiny": "tiny (test set, noise)"}})),
    Setting("image", _T, _K.PICTURE, None, flag="--image", scope=Scope.RUN, extends=False, label="picture",
            help="the start picture (needed unless --resume, --extend or --bridge)",
            widget=Widget(_W.IMAGE, "Start picture", "start", options=dict(
                height=320, placeholder="Drop a picture here, paste one, or click to upload"))),
    Setting("end_image", _T, _K.PICTURE, None, flag="--end-image", scope=Scope.RUN, extends=False,
            label="end frame", help="optional last frame (inverted sampling only)",
            widget=Widget(_W.IMAGE, "End picture (optional)", "end", options=dict(
                height=200, placeholder="The video ends on this picture"))),
    # Pictures the video passes through: (picture, seconds, weight) triples, or "PATH@SECONDS[:WEIGHT]" text
    # (method/keyframes.py says which sections each conditions); inverted sampling only. Records keep their
    # times and weights (the pictures are the run's files).
    Setting("keyframes", _T, _K.KEYFRAMES, (), flag="--keyframe", metavar="PATH@SECONDS[:WEIGHT]", scope=Scope.RUN,
            extends=False, help="a picture the video passes through near SECONDS (inverted sampling only; weight "
                                "0..1, default 1); repeat for several (README: which sections each conditions)",
            widget=Widget(_W.KEYFRAMES, "Keyframes: pictures the video passes through", "end")),
    Setting("image_name", _T, _K.TEXT, "", scope=Scope.RUN, extends=False,
            help="where the picture came from, for records (found from the picture's path when not given)"),
    # --- method: what decides the pixels ---
    Setting("prompt", _M, _K.TEXT, "", flag="--prompt", flag_default=None,  # None: not given (a new video needs one)
            help="what should happen in the video (needed for a new video, and to extend a video not made "
                 "here); or what happens when: '[0s: he waves] [2.5s: he walks away]' (with --extend the "
                 "times count from the start of the new part)",
            widget=Widget(_W.TEXT, "What should happen", "start", options=dict(
                lines=2, max_lines=6, placeholder="Describe the motion, e.g. the person turns and smiles"))),
    Setting("negative_prompt", _M, _K.TEXT, "", flag="--negative-prompt", help="used only when --cfg is not 1",
            widget=Widget(_W.TEXT, "Negative prompt (used only when CFG is not 1)", "advanced", options={"lines": 1})),
    Setting("seconds", _M, _K.FLOAT, 5.0, low=0, high=120.0, low_open=True, flag="--seconds", extends=False,
            label="Length in seconds", help="video length",
            widget=Widget(_W.SLIDER, "Length (seconds)", "settings", low=1, step=0.5)),
    Setting("steps", _M, _K.INT, 25, low=1, high=100, flag="--steps", label="Steps",
            help="sampling steps per section", widget=Widget(_W.SLIDER, "Steps per section", "settings", step=1)),
    Setting("seed", _M, _K.INT, 31337, low=0, high=2**63 - 1, flag="--seed", label="Seed", help="random seed",
            widget=Widget(_W.NUMBER, "Seed", "settings")),
    Setting("gs", _M, _K.FLOAT, 10.0, low=1, high=32, flag="--gs", label="Distilled guidance",
            help="distilled guidance", widget=Widget(_W.SLIDER, "Guidance (gs)", "settings", step=0.5)),
    Setting("window", _M, _K.INT, TRAINED_WINDOW, low=1, high=33, flag="--window", label="Window",
            help="latent frames per section",
            widget=Widget(_W.SLIDER, "Window (latent frames)", "advanced", step=1,
                          info=f"per section; {TRAINED_WINDOW} is the trained size")),
    Setting("cfg", _M, _K.FLOAT, 1.0, low=1, high=32, flag="--cfg", label="CFG",
            help="real CFG; 1 = off and twice as fast",
            widget=Widget(_W.SLIDER, "CFG (real guidance)", "advanced", high=10, step=0.1,
                          info="1 = off, and twice as fast")),
    Setting("rs", _M, _K.FLOAT, 0.0, low=0, high=1, flag="--rs", label="Guidance rescale", help="CFG rescale",
            widget=Widget(_W.SLIDER, "Guidance rescale", "advanced", step=0.05)),
    Setting("mode", _M, _K.CHOICE, None, choices=MODES, optional=True, flag="--mode", extends=False,
            label="Sampling mode", help="sampling order (default: the model set's own)",
            widget=Widget(_W.RADIO, "Sampling order", "model", auto="model default",
                          info="auto: inverted for FramePack, forward for F1")),
    Setting("resolution", _M, _K.INT, TRAINED_RESOLUTION, low=MIN_RESOLUTION, high=MAX_RESOLUTION, flag="--resolution",
            extends=False, label="Resolution",
            help=f"bucket size: {TRAINED_RESOLUTION} is the published table; others scale it "
                 f"({MIN_RESOLUTION}..{MAX_RESOLUTION})",
            widget=Widget(_W.SLIDER, "Resolution", "model", step=16, info=f"{TRAINED_RESOLUTION}: the trained size")),
    Setting("variant", _M, _K.CHOICE, "bh1", choices=SAMPLER_VARIANTS, label="Sampler variant",
            help="UniPC's variant", widget=Widget(_W.RADIO, "Sampler variant (UniPC)", "advanced")),
    Setting("shift", _M, _K.FLOAT, None, low=0, high=100, low_open=True, optional=True, label="Shift",
            help="the timestep shift (None: derived from the token count)",
            widget=Widget(_W.NUMBER, "Timestep shift", "advanced", auto=0, info="0 = from the video's size")),
    Setting("prompt_blend", _M, _K.INT, 0, low=0, high=100, flag="--prompt-blend", metavar="N", label="Prompt blend",
            help="with timed prompts: cross over from one prompt to the next across N sections",
            widget=Widget(_W.SLIDER, "Prompt blend (sections)", "creative", high=8, step=1,
                          info="Cross over from one timed prompt to the next across this many sections")),
    Setting("loop", _M, _K.BOOL, False, flag="--loop", extends=False,
            help="end on the start picture, so the MP4 repeats without a cut (inverted sampling only)",
            widget=Widget(_W.CHECKBOX, "Loop: end on the start picture", "end")),
    # ("path", weight) pairs, or "PATH[:WEIGHT]" text as the command line gives it.
    Setting("loras", _M, _K.LORAS, (), flag="--lora", metavar="PATH[:WEIGHT]",
            help="apply a LoRA (.safetensors: musubi/kohya, diffusers/PEFT or original HunyuanVideo); "
                 "weight default 1, negative allowed; repeat for several",
            widget=Widget(_W.LORAS, "LoRA", "creative")),
    # --- output: where the video goes and how it is encoded ---
    Setting("folder", _O, _K.PATH, Path("outputs"), flag="--outputs", scope=Scope.RUN, extends=False,
            help="folder for videos, input pictures and settings"),  # runs get fresh names: <date>-<time>_<seed>
    Setting("path", _O, _K.PATH, None, optional=True, flag="--output", scope=Scope.RUN, extends=False,
            help="MP4 path (default: a fresh <date>-<time>_<seed>.mp4 in --outputs)"),
    Setting("crf", _O, _K.INT, 16, low=0, high=51, flag="--crf", label="MP4 quality (CRF)",
            help="MP4 quality, 0 (lossless) .. 51",
            widget=Widget(_W.SLIDER, "MP4 quality (CRF)", "model", step=1, info="0 lossless · 23 smaller")),
    # After the video is made: finishing runs on it (framepack_core/finishing), each into a file of its own.
    Setting("upscale", _O, _K.INT, 1, low=1, high=4, choices=(1, 2, 4), flag="--upscale", metavar="2|4",
            help="when the video is made, also write it upscaled x2 or x4 (NAME.upscaled-x2.mp4; 1: not)",
            widget=Widget(_W.DROPDOWN, "Upscale it when made", "advanced",
                          options={"choice_labels": {1: "no", 2: "x2", 4: "x4"}})),
    Setting("upscaler", _O, _K.TEXT, None, optional=True, flag="--upscaler", metavar="NAME_OR_PATH",
            help="the upscaler for --upscale: a file, a file's name in upscalers/, or a named default "
                 "(default: realesrgan-x2plus for x2, realesrgan-x4plus for x4)",
            widget=Widget(_W.TEXT, "Upscaler (a file in upscalers/, or a named default)", "advanced", auto="",
                          options={"lines": 1, "placeholder": "empty: realesrgan-x2plus or -x4plus"})),
    Setting("interpolate", _O, _K.INT, 1, low=1, high=4, choices=(1, 2, 4), flag="--interpolate", metavar="2|4",
            help="when the video is made (and upscaled), also write it at 2 or 4 times the frame rate "
                 "(RIFE from rife/, else ffmpeg's minterpolate; 1: not)",
            widget=Widget(_W.DROPDOWN, "Smooth it when made (frame rate x)", "advanced",
                          options={"choice_labels": {1: "no", 2: "x2", 4: "x4"}})),
    # --- speed: how fast it is made ---
    Setting("step_cache", _S, _K.BOOL, True, flag="--no-step-cache",
            help="compute every block on every step (slower; by default MagCache skips blocks on steps "
                 "where they would change little)",
            widget=Widget(_W.CHECKBOX, "Step cache", "settings",
                          info="Faster: skips work on steps that change little")),
    Setting("cache_method", _S, _K.CHOICE, CACHE_METHODS[0], choices=CACHE_METHODS, flag="--cache-method",
            label="Step cache", help="step cache: magcache (the authors' ratios for FramePack), teacache, "
                                     "or diffusers' first-block cache",
            widget=Widget(_W.RADIO, "Step cache method", "advanced")),
    Setting("cache_threshold", _S, _K.FLOAT, 0.15, low=0, high=1, low_open=True, flag="--cache-threshold",
            label="Step cache threshold", help="step cache threshold: higher skips more and drifts more (0.1 is safer)",
            widget=Widget(_W.SLIDER, "Step cache threshold", "advanced", low=0.01, step=0.01,
                          info="Higher skips more and drifts more")),
    Setting("cache_calibrate", _S, _K.BOOL, False, flag="--cache-calibrate",
            help="measure MagCache's magnitude ratios for this model and step count (skipping nothing) "
                 "and save them; later MagCache runs with that model and step count use them",
            widget=Widget(_W.CHECKBOX, "Measure MagCache's ratios (skips nothing this run)", "advanced")),
    Setting("attention_requested", _S, _K.CHOICE, "auto", choices=ATTENTION_KERNELS, flag="--attention",
            label="Attention", aliases=("attention",), used="attention_used",
            help="attention kernel (auto: the fastest that works here, else PyTorch SDPA)",
            widget=Widget(_W.DROPDOWN, "Attention kernel", "advanced")),
    Setting("fp8", _S, _K.CHOICE, "off", choices=FP8_MODES, flag="--fp8", flag_const="storage", flag_default=None,
            metavar="MODE", label="FP8", used="fp8_used", legacy=((True, "storage"), (False, "off"), ("true", "storage"), ("false", "off")),
            help="FP8 weights: storage (what --fp8 alone means: the transformer's weights in FP8, "
                 "multiplied in bf16: half the memory and streaming, slightly lossy), fast (also multiply "
                 "in FP8: faster on GPUs of compute capability 8.9+, RTX 40/50, H100; elsewhere refused "
                 "with a notice), off (the default)",
            widget=Widget(_W.RADIO, "FP8 weights", "advanced", info="storage: half the memory; fast: RTX 40/50, H100")),
    Setting("compile", _S, _K.BOOL, False, flag="--compile",
            help="torch.compile the transformer blocks (CUDA only; the first steps take longer)",
            widget=Widget(_W.CHECKBOX, "Compile the transformer (CUDA only)", "advanced")),
    Setting("vram_budget_gb", _S, _K.FLOAT, None, low=0, high=4096, optional=True, flag="--vram-budget",
            metavar="GB", label="VRAM budget (GB)",
            help="GPU memory the app may use, in GiB, activations included (default: what is free); "
                 "model blocks that do not fit stream from system memory. Ignored without a CUDA GPU",
            widget=Widget(_W.NUMBER, "VRAM budget (GB)", "model", auto=0,
                          info="0 = automatic. Lower it if the GPU runs out of memory.")),
    # One video on several devices (framepack_core/parallel/): the packed tokens split across N processes.
    Setting("gpus", _S, _K.INT, 1, low=1, high=64, flag="--gpus", metavar="N", label="GPUs",
            help="make one video on N GPUs at once, one process each (sequence parallel; on a computer "
                 "without CUDA, N processes on the CPU)",
            widget=Widget(_W.NUMBER, "GPUs for this video", "advanced", info="1: this process alone; N: one "
                                                                             "process per GPU")),
    Setting("vae_tiling", _S, _K.BOOL, None, optional=True, flag="--vae-tiling", used="vae_tiling_used",
            flag_values={"auto": None, "on": True, "off": False}, label="VAE tiling",
            help="decode the VAE in tiles: auto (when GPU memory is short), on, off",
            widget=Widget(_W.RADIO, "VAE tiling", "advanced", auto="auto")),
    # --- recorded only: what follows from the rest ---
    Setting("prompt_spans", _M, _K.RECORD, None, scope=Scope.RECORD, help="which prompt covers which seconds"),
    Setting("lora_files", _M, _K.RECORD, None, scope=Scope.RECORD,
            help="the LoRA files by name, with their SHA-256 and weight"),
    Setting("keyframe_sections", _M, _K.RECORD, None, scope=Scope.RECORD,
            help="which sections each keyframe conditions"),
    # --- the session: flags for every run of the process (engine/session_config.py); never a request's ---
    # (The VRAM budget is both: the session's, and a request may ask for less; it is a speed setting above.)
    Setting("models_dir", _X, _K.PATH, None, optional=True, flag="--models-dir", metavar="DIR", scope=Scope.SESSION,
            help="local copy of the weights, laid out as DIR/<owner>/<repository>/... "
                 "(default: the Hugging Face cache; env FRAMEPACK_MODELS_DIR)"),
    Setting("ram_budget_gb", _X, _K.FLOAT, None, low=0, high=4096, optional=True, flag="--ram-budget", metavar="GB",
            scope=Scope.SESSION, label="RAM budget (GB)",
            help="system memory the app may use, in GiB (default: what is available less 2 GiB); "
                 "streamed blocks beyond it are read from their files on disk instead of pinned RAM"),
)

SETTINGS = {setting.name: setting for setting in SETTINGS_LIST}
DEFAULTS = {setting.name: setting.default for setting in SETTINGS_LIST}
DEFAULT_CACHE_THRESHOLD = DEFAULTS["cache_threshold"]  # the step caches' own default is the app's


def settings_of(part: Part | None = None, scope: Scope | None = None) -> tuple[Setting, ...]:
    """The settings of a part and/or a scope, in the table's order."""
    return tuple(s for s in SETTINGS_LIST if part in (None, s.part) and scope in (None, s.scope))


def canonical_name(name: str) -> str:
    """The setting's name for `name`, which may be an older one (an alias)."""
    return _ALIASES.get(name, name)


_ALIASES = {alias: setting.name for setting in SETTINGS_LIST for alias in setting.aliases}

# What an extension does not take from its command line: its seconds are the ones to add, it samples
# forward from the source's frames at the source's size, and it goes where the command line says.
EXTEND_FIXED = tuple(s.name for s in SETTINGS_LIST if not s.extends)
