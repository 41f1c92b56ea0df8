"""Upscaler models: the files a user dropped into the upscalers folder, a few named defaults that download on
first use, and loading any of them through spandrel (which tells ESRGAN, Real-ESRGAN Compact, SwinIR, HAT, SPAN
and more apart by their state dict's names and shapes).

Published upscalers are mostly `.pth` files. spandrel opens them with its restricted unpickler, which rebuilds
tensors and plain containers only and refuses anything that would run code; `.safetensors` files are read as
they are. TorchScript (`.pt`) and other kinds are refused.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SUFFIXES = (".pth", ".safetensors")
DEFAULT_FOLDER = Path("upscalers")


@dataclass(frozen=True)
class NamedUpscaler:
    repo_id: str  # a Hugging Face mirror of the authors' release file (xinntao/Real-ESRGAN's GitHub releases)
    filename: str
    scale: int


# The Real-ESRGAN authors' published files (RealESRGAN_x2plus: RRDBNet, 23 blocks, pixel-unshuffled input;
# RealESRGAN_x4plus: RRDBNet, 23 blocks; realesr-general-x4v3: SRVGGNetCompact, 32 convolutions), fetched
# from a Hugging Face mirror so that the download has the model sets' progress, disk check and resume.
MIRROR = "lllyasviel/Annotators"
NAMED = {
    "realesrgan-x2plus": NamedUpscaler(MIRROR, "RealESRGAN_x2plus.pth", 2),
    "realesrgan-x4plus": NamedUpscaler(MIRROR, "RealESRGAN_x4plus.pth", 4),
    "realesr-general-x4v3": NamedUpscaler(MIRROR, "realesr-general-x4v3.pth", 4),
}
DEFAULT_FOR_SCALE = {2: "realesrgan-x2plus", 4: "realesrgan-x4plus"}


@dataclass
class Upscaler:
    """A loaded upscaler: spandrel's model descriptor, and what the record says about it."""
    model: object  # spandrel.ImageModelDescriptor
    path: Path
    sha256: str
    architecture: str
    scale: int

    @property
    def described(self) -> dict:
        return {"model_file": self.path.name, "model_sha256": self.sha256, "architecture": self.architecture,
                "model_scale": self.scale}


def listed(folder: Path = DEFAULT_FOLDER) -> list[Path]:
    """The model files in the upscalers folder, by name (what the page and `--model` offer beside NAMED)."""
    try:
        return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    except OSError:
        return []


def choices(folder: Path = DEFAULT_FOLDER) -> list[str]:
    return [p.name for p in listed(folder)] + list(NAMED)


def resolve(name: str | None, scale: int, folder: Path = DEFAULT_FOLDER,
            say: Callable[[str], None] = lambda line: None) -> Path:
    """The file that `name` means: a path, a file in the upscalers folder (by name or stem), or a named default
    (downloaded if missing). None: the default for `scale`. ValueError or ModelsUnavailableError, one sentence."""
    if name is None:
        name = DEFAULT_FOR_SCALE[scale]
    path = Path(name)
    if path.is_file():
        return path
    for candidate in listed(folder):
        if name in (candidate.name, candidate.stem):
            return candidate
    if name in NAMED:
        return _download(name, NAMED[name], say)
    offered = ", ".join(choices(folder))
    raise ValueError(f"There is no upscaler called {name!r}: give a .pth or .safetensors file, or one of: {offered}.")


def load(path: Path, device: str = "cpu") -> Upscaler:
    """The upscaler in `path`, through spandrel's detection. ValueError (one sentence) for anything else."""
    from .spandrel_import import import_spandrel

    spandrel = import_spandrel()
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path.name} is not an upscaler model file: give a .pth or .safetensors file.")
    try:
        model = spandrel.ModelLoader(device=device).load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise ValueError(f"{path.name} is not an upscaler model spandrel knows (no supported architecture matches "
                         "its weights).") from None
    except Exception as error:  # a broken or foreign file: torch's and pickle's errors are many kinds
        raise ValueError(f"{path.name} could not be read as a model file ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else 'no details'}).") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.purpose != "SR" or model.scale < 2:
        raise ValueError(f"{path.name} is a {model.architecture.name} model for {model.purpose}, not an upscaler.")
    model.eval()
    return Upscaler(model, path, file_sha256(path), model.architecture.id, int(model.scale))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(name: str, named: NamedUpscaler, say: Callable[[str], None]) -> Path:
    """Like the model sets (models/download.py): the free space checked first, progress while it runs, and a
    cut-off download starting that file over; offline, one sentence saying how to get the file."""
    import huggingface_hub

    from framepack_core.failures import ModelsUnavailableError
    from framepack_core.models.download import DownloadProgress, check_free_space
    from framepack_core.models.loading import hub_cache_dir

    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    options = dict(cache_dir=hub_cache_dir())
    bars = {}
    try:
        if not offline:
            info = huggingface_hub.hf_hub_download(named.repo_id, named.filename, dry_run=True, **options)
            if info.will_download:
                check_free_space(info.file_size or 0, hub_cache_dir(), f"{name} upscaler")
                bars = {"tqdm_class": DownloadProgress(info.file_size or 0, say, f"the {name} upscaler").bar_class()}
        return Path(huggingface_hub.hf_hub_download(named.repo_id, named.filename, local_files_only=offline,
                                                    **options, **bars))
    except (OSError, ValueError) as error:  # not found, no connection, HTTP errors
        why = "HF_HUB_OFFLINE forbids downloading" if offline else "it could not be downloaded"
        raise ModelsUnavailableError(
            f"The upscaler {name} ({named.filename}) is not in the Hugging Face cache and {why}; put the file "
            f"into the {DEFAULT_FOLDER}/ folder (or pass --model PATH) and try again.") from error
