"""The model sets (FramePack I2V, FramePack F1, tiny): where their weights come from, and loading them.

Every set is a table of hub repositories and subfolders. A repository is found either under a
local models_dir (`<dir>/<owner>/<name>/<subfolder>`) or in the Hugging Face cache, downloading
only the subfolders needed. The tiny set is the same table resolved under a folder that
`tiny.ensure_tiny_models` builds, so it goes through this very code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from framepack_core.failures import ModelsUnavailableError

from . import tiny
from .mapped_loading import load_mapped
from .sets import MODEL_SPECS, MODELS_DIR_ENV, Models, ModelSetSpec
from .template_check import check_prompt_template

# key -> what the progress line says while it loads
_LABELS = {
    "text_encoder": "text encoder (Llama)", "tokenizer": "tokenizer (Llama)",
    "text_encoder_2": "text encoder (CLIP-L)", "tokenizer_2": "tokenizer (CLIP-L)", "vae": "VAE",
    "image_encoder": "image encoder (SigLIP)", "feature_extractor": "image processor (SigLIP)",
    "transformer": "transformer (FramePack)",
}
# Weights load only from safetensors; other weight formats are never fetched.
_IGNORE = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.gguf"]


def load_models(name: str, *, models_dir: str | os.PathLike | None = None,
                progress: Callable[[str], None] | None = None) -> Models:
    """Load a model set onto the CPU, in eval mode, without gradients."""
    if name not in MODEL_SPECS:
        raise ValueError(f"Unknown model set {name!r}; choose one of {', '.join(MODEL_SPECS)}.")
    spec = MODEL_SPECS[name]
    say = progress or (lambda message: None)
    if name == "tiny":
        # Never another models_dir: it may hold the real weights, which the tiny spec must not load.
        say("preparing the tiny model set (built once, no download)…")
        try:
            tiny_dir = tiny.ensure_tiny_models()
            return _load(spec, _local_roots(spec, tiny_dir), say)
        except (OSError, ModelsUnavailableError) as error:
            folder = tiny.default_cache_dir() / tiny.VERSION
            raise ModelsUnavailableError(f"The tiny model set could not be built or loaded ({_first_line(error)}). "
                                         f"Delete {folder} to rebuild it, or set FRAMEPACK_CACHE to another "
                                         "folder.") from error
    models_dir = models_dir or os.environ.get(MODELS_DIR_ENV) or None
    roots = _local_roots(spec, Path(models_dir)) if models_dir else _hub_roots(spec, say)
    try:
        return _load(spec, roots, say)
    except OSError as error:  # a folder is there but files in it are missing or unreadable
        where = f"under {models_dir}" if models_dir else "in the Hugging Face cache"
        raise ModelsUnavailableError(_unavailable_message(
            spec, f"a model {where} could not be read: {_first_line(error)}")) from error


def _load(spec: ModelSetSpec, roots: dict[str, Path], say: Callable[[str], None]) -> Models:
    # The libraries' own per-file progress bars would interleave with ours (`say`).
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    loaded = {}
    # The tokenizer first: it is checked before gigabytes of weights load.
    for key in sorted(spec.sources, key=lambda k: k != "tokenizer"):
        source = spec.sources[key]
        loaded[key] = _load_component(key, spec, roots[source.repo_id], say)
        if key == "tokenizer":
            check_prompt_template(loaded[key], spec, roots[source.repo_id] / (source.subfolder or ""))
    return Models(spec=spec, **loaded)


def _local_roots(spec: ModelSetSpec, models_dir: Path) -> dict[str, Path]:
    if not models_dir.is_dir():
        raise ModelsUnavailableError(_unavailable_message(spec, f"the models folder {models_dir} does not exist"))
    missing = sorted({str(Path(s.repo_id, s.subfolder or "")) for s in spec.sources.values()
                      if not (models_dir / s.repo_id / (s.subfolder or "")).is_dir()})
    if missing:
        raise ModelsUnavailableError(_unavailable_message(
            spec, f"these folders are missing under {models_dir}: {', '.join(missing)}"))
    return {s.repo_id: models_dir / s.repo_id for s in spec.sources.values()}


def _hub_roots(spec: ModelSetSpec, say: Callable[[str], None]) -> dict[str, Path]:
    import huggingface_hub

    from .download import DownloadProgress, check_free_space, missing_bytes

    # Read at call time: huggingface_hub reads these once at import, which may be too early.
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    snapshot = huggingface_hub.snapshot_download
    options = {repo_id: dict(allow_patterns=[f"{sub}/*" for sub in subfolders] if all(subfolders) else None,
                             ignore_patterns=_IGNORE, cache_dir=hub_cache_dir())  # patterns None: the whole repository
               for repo_id, subfolders in _repositories(spec).items()}
    progress = None
    if not offline:  # what is missing, and whether it fits, before a byte is fetched
        say(f"checking which files of the {spec.name} models are missing…")
        missing = [missing_bytes(snapshot, repo_id, **kwargs) for repo_id, kwargs in options.items()]
        needed = sum(m or 0 for m in missing)
        if needed:
            check_free_space(needed, hub_cache_dir(), spec.name)
            progress = DownloadProgress(needed, say, f"the {spec.name} models")
    roots = {}
    for repo_id, kwargs in options.items():
        fetch = "" if offline else ", downloading what is missing"
        say(f"looking for {repo_id} in the Hugging Face cache{fetch}…")
        bars = {"tqdm_class": progress.bar_class()} if progress is not None else {}
        try:
            roots[repo_id] = Path(snapshot(repo_id, local_files_only=offline, **kwargs, **bars))
        except OSError as error:  # huggingface_hub's not-found, HTTP and connection errors are all OSErrors
            why = ("HF_HUB_OFFLINE forbids downloading" if offline
                   else f"downloading failed: {_first_line(error)}")
            raise ModelsUnavailableError(_unavailable_message(
                spec, f"{repo_id} is not in the Hugging Face cache and {why}")) from error
    return roots


def _load_component(key: str, spec: ModelSetSpec, root: Path, say: Callable[[str], None]):
    say(f"loading {_LABELS[key]}…")
    subfolder = spec.sources[key].subfolder or ""
    if key in ("tokenizer", "tokenizer_2"):
        return _load_tokenizer(key, root, subfolder)
    if key == "feature_extractor":
        # The PIL backend: what the reference app used, and it needs no torchvision.
        from transformers import SiglipImageProcessorPil

        return SiglipImageProcessorPil.from_pretrained(root, subfolder=subfolder)
    _refuse_pickles(root / subfolder)
    dtype = spec.dtypes[key]
    if key in ("vae", "transformer"):
        import diffusers

        cls = {"vae": diffusers.AutoencoderKLHunyuanVideo,
               "transformer": diffusers.HunyuanVideoFramepackTransformer3DModel}[key]
        # Mapped from its files (never materialised) where they match the model; else the library's way.
        model = load_mapped(cls, root / subfolder, dtype, "diffusers")
        if model is None:
            model = cls.from_pretrained(root, subfolder=subfolder or None, torch_dtype=dtype, use_safetensors=True)
    else:
        import transformers

        cls = {"text_encoder": transformers.LlamaModel, "text_encoder_2": transformers.CLIPTextModel,
               "image_encoder": transformers.SiglipVisionModel}[key]
        model = load_mapped(cls, root / subfolder, dtype, "transformers")
        if model is None:
            model = cls.from_pretrained(root, subfolder=subfolder, dtype=dtype, use_safetensors=True)
    return model.eval().requires_grad_(False)


def _load_tokenizer(key: str, root: Path, subfolder: str):
    """The tokenizer of a folder, the same on every transformers 5.x. Right padding: conditioning
    reads the prompt's features from the front.

    Llama's from its tokenizer.json, as is, whatever class tokenizer_config.json names: the real
    one is Llama 3's byte-level BPE declared as "LlamaTokenizer", and transformers 5.17's
    AutoTokenizer maps that name to a SentencePiece-style rebuild that drops the spaces (5.23's
    notices, with a warning meant for the repository's owner). CLIP's repository has no
    tokenizer.json, only vocab.json and merges.txt, which CLIPTokenizer reads.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    as_is = key == "tokenizer" and (root / subfolder / "tokenizer.json").is_file()
    cls = PreTrainedTokenizerFast if as_is else AutoTokenizer
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(root, subfolder=subfolder, padding_side="right")
    finally:
        hf_logging.set_verbosity(verbosity)


_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _refuse_pickles(folder: Path) -> None:
    """Say plainly why a folder of pickled weights is not loaded (the libraries' own words do not)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLES for p in folder.glob(pattern))
    if pickles:
        raise ModelsUnavailableError(
            f"{folder} holds weights only as pickle files ({', '.join(pickles[:3])}), which can run code when "
            "loaded; this app loads weights only from .safetensors files. Use the safetensors version of the "
            "model (or convert the pickle with a tool you trust) and try again.")


def _repositories(spec: ModelSetSpec) -> dict[str, list[str | None]]:
    repos: dict[str, list[str | None]] = {}
    for src in spec.sources.values():
        repos.setdefault(src.repo_id, []).append(src.subfolder)
    return repos


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment as it is now."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _first_line(error: BaseException) -> str:
    # huggingface_hub's messages run over many lines; the first says what happened.
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _unavailable_message(spec: ModelSetSpec, reason: str) -> str:
    lines = [f"The model set '{spec.name}' is not available: {reason}."]
    lines.append(f"It needs these Hugging Face repositories, about {spec.approx_gb:.0f} GB in all:")
    for repo_id, subfolders in _repositories(spec).items():
        parts = ", ".join(s for s in subfolders if s)
        lines.append(f"  {repo_id}" + (f" ({parts})" if parts else ""))
    lines += [
        f"With a connection they are downloaded once into {hub_cache_dir()} (set HF_HOME or HF_HUB_CACHE "
        "to change where; HF_HUB_OFFLINE=1 forbids downloading).",
        f"To use a copy you already have, pass --models-dir DIR (or set {MODELS_DIR_ENV}=DIR) with the files laid "
        "out as DIR/<owner>/<name>/..., e.g. DIR/lllyasviel/flux_redux_bfl/image_encoder/.",
        "To try the app without any download, use --model tiny.",
    ]
    return "\n".join(lines)
