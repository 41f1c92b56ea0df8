"""An extension, and a branch: a finished video continued forward, its frames kept as they are.

    run = begin(Extend("a.mp4", seconds=2, prompt=…))            # a.mp4's frames, then 2 s more
    run = begin(Extend("a.mp4", seconds=2, from_seconds=3.5))    # a branch: a.mp4 up to 3.5 s, then 2 s more

A new run (a new name) whose video is the source's frames, untouched, then the new ones, sampled forward
from the source's latents: its saved ones where this app made it (bit for bit), else its last frames
encoded by the VAE at the size it is worked at (continued.working_size); the new frames are scaled back to
the source's size so they join its stream. The source is never changed.

A branch continues from a frame `cut` inside the source: its cut point nearest the time asked (a
keyframe, so the frames before it are copied, bit for bit), else that frame (the frames before it are
encoded again). Saved latents are cut at the latent frame holding that frame: latent 0 is frame 0,
latent k >= 1 is frames 4k-3 .. 4k (the VAE's causal layout). When the cut falls inside a latent's four
frames, the new part's first `skip` frames (those the source already shows) are left out, so the video's
clock runs on without a jump.

The new part, told truthfully: the model makes whole sections of 4 x window frames. At the app's own
30 fps the new part is whole sections, as for any run. A source at another rate gets N seconds at its own
rate exactly: round(N * fps) frames, sampled as the whole sections that hold them, the frames past them
cut from the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.beginning import Beginning, Origin
from ..media.latents import SavedLatents
from ..media.pictures import crop_to_bucket
from ..media.segments import Copied
from ..media.video_files import VideoFacts, cut_points, first_frame, last_frames, probe_video
from ..method.prompts import continued_prompt, parse_prompt
from ..method.schedule import CONTEXT_FRAMES, section_count
from ..method.sections import SavedSections, SectionSettings
from ..models.encoders import encode_latent
from ..run.files import files_of
from ..settings import DEFAULTS, FPS, SETTINGS, SamplingMode
from .continued import own_latents, prompt_clock, read_source, resized, to_size, working_size
from .source_check import source_digest, trusted_source


class Extend:
    """The start a front end builds to extend (or, with `from_seconds`, branch) the video at `path` by
    `seconds`. `settings`: flat request fields given (prompt=…, seed=…, model=…) over the source's own."""

    def __init__(self, path, seconds: float, from_seconds: float | None = None, folder: Path | None = None,
                 output: Path | None = None, **settings):
        self.path, self.seconds, self.from_seconds = path, seconds, from_seconds
        self.folder, self.output, self.settings = folder, output, settings

    def parts(self):
        request, origin = extension_parts(self.path, self.seconds, self.folder, self.output, self.from_seconds,
                                          **self.settings)
        return request, origin, None


def extension_parts(path, seconds: float, folder: Path | None = None, output: Path | None = None,
                    from_seconds: float | None = None, **given) -> tuple:
    """(request, origin) of a new run that continues the video at `path` by `seconds`, sampling forward
    (`Extend.parts`). `from_seconds`: a branch, continuing from that moment instead of the end (the source's
    nearest cut point). Settings come from the source's saved latents (or its MP4 metadata, or defaults),
    then `given` (flat request fields, e.g. prompt=…, model=…, seed=…)."""
    from ..request import Request
    from ..setting_values import check_value

    seconds = check_value(SETTINGS["seconds"], seconds)  # the table's range, before any arithmetic on it
    branch = from_seconds is not None
    source = read_source(path, "extended", "A branch (--extend with --from)" if branch else "An extension (--extend)",
                         SamplingMode.FORWARD, given, folder, output, from_start=branch, whole=True)
    facts, window = source.facts, int(source.settings.get("window") or DEFAULTS["window"])
    part = new_part(seconds, facts.fps, window)
    frames = branch_cut(source.path, facts, from_seconds) if branch else facts.frames  # the source's frames kept
    prompt = source.settings.get("prompt") or ""
    if not given.get("prompt"):  # the source's own timed prompts, on the new part's timeline
        prompt = continued_prompt(prompt, prompt_clock(source.saved, frames, facts.fps), part.seconds, window)
    parse_prompt(prompt, part.seconds, window, extends=frames / facts.fps)  # its times count from the new part
    settings = dict(source.settings)
    settings.pop("end_image", None)
    settings.pop("loop", None)  # forward sampling continues the video: it aims at no end frame
    settings |= {"seconds": part.seconds, "mode": SamplingMode.FORWARD, "prompt": prompt}
    image = files_of(Path(path)).picture
    image = image if source.saved and image.exists() else first_frame(Path(path))
    request = Request.from_fields(image=image, image_name=Path(path).name, **settings).validated()
    cut = frames if branch else None
    return request, ExtendedVideo(source.path, facts, source.saved, part.frames, cut, source_digest(source.path))


def branch_cut(source: Path, facts, seconds: float) -> int:
    """The frame a branch of `source` at `seconds` keeps the frames before: the stream's cut point nearest
    it when one lies within SNAP_SECONDS (the frames before it are copied, bit for bit), else the frame at
    that time (the frames before it are encoded again). ValueError (one sentence) for a time outside it."""
    if facts.frames < 2:
        raise ValueError(f"{source.name} has one frame; a branch keeps some of a video's frames, so it needs two or "
                         "more (extend it instead).")
    length = facts.frames / facts.fps
    if not 0 < seconds < length:
        raise ValueError(f"A branch starts inside {source.name}: after 0 s and before its end at {length:.2f} s, "
                         f"not at {seconds:g} s.")
    wanted = seconds * facts.fps
    points = [point for point in cut_points(source)
              if 0 < point < facts.frames and abs(point - wanted) <= SNAP_SECONDS * facts.fps]
    if points:
        return min(points, key=lambda point: (abs(point - wanted), point))
    return min(max(1, round(wanted)), facts.frames - 1)


# How far a branch moves to a keyframe to keep its frames bit for bit. A video made here has one where each
# segment it wrote begins: forward, about every section (1.2 s at the default window); inverted, only near its
# end (README, --from), so a branch of it early on is encoded again.
SNAP_SECONDS = 1.0


@dataclass(frozen=True)
class NewPart:
    sections: int
    seconds: float  # what the request carries (another rate: the sections' length at the model's 30 fps)
    frames: int | None  # frames kept of the sections; None: all of them (whole sections)


def new_part(seconds: float, fps: float, window: int) -> NewPart:
    if seconds <= 0:
        raise ValueError(f"--seconds must be more than 0 to extend a video, not {seconds:g}.")
    if abs(fps - FPS) < 0.01:
        return NewPart(section_count(seconds, window), seconds, None)
    frames = max(1, round(seconds * fps))
    sections = math.ceil(frames / (4 * window))
    return NewPart(sections, sections * 4 * window / FPS, frames)


@dataclass(frozen=True)
class ExtendedVideo(Origin):
    """A video continued forward: its frames first, untouched, then the new sections. With `cut`, a
    branch: only its frames before that one (a cut point of its stream), then the new sections."""
    source: Path  # the MP4 whose frames come first
    facts: VideoFacts  # its stream
    source_latents: SavedLatents | None = None  # its saved latents, when this app made it
    new_frames: int | None = None  # frames the new part keeps (None: its whole sections)
    cut: int | None = None  # a branch: the source's frames kept (None: all of them)
    digest: str = ""  # the source's SHA-256 as the run starts: its record and latents name that very file

    @classmethod
    def recalled(cls, part: dict) -> Origin | None:
        """The extension or branch a record's `continues` or a latents file's `extends` names; ValueError when
        its source is no longer the file the run read (source_check.py)."""
        if "video" not in part:
            return None
        source = trusted_source(part["video"], part.get("sha256"), "the video this run extends")
        facts = probe_video(source)
        cut = part["frames"] if part.get("cut") else None
        return cls(source, facts, own_latents(source, facts, from_start=cut is not None), part.get("new_frames"), cut,
                   source_digest(source))

    def begin(self, request, models, manager) -> Beginning:
        base = extension_base(self, models, manager, request, request.method.window)
        notices = ()
        if self.cut is not None:
            kept = ("kept as they are" if self.cut in cut_points(self.source) else
                    "encoded again (it has no keyframe near that moment to cut at without re-encoding)")
            notices = (f"Branching {self.source.name} at {self.cut / self.facts.fps:.2f} s (its frame {self.cut}): "
                       f"its frames before it are {kept}.",)
        return Continuing(base.pixels, base.start, None, SavedSections(0, base.video), notices, prefix=base)

    def resumed(self, saved: SavedLatents, request, models, manager) -> Beginning:
        base = extension_base(self, models, manager, request, request.method.window)
        return Continuing(base.pixels, saved.start, saved.end, SavedSections(saved.done, saved.video), prefix=base)

    def described(self) -> dict:
        if self.cut is None:
            return {"extends": self.source.name}
        return {"branches": self.source.name, "from_seconds": round(self.cut / self.facts.fps, 3)}

    def restarts(self) -> dict:
        kept = {"video": str(self.source), "frames": self.facts.frames if self.cut is None else self.cut,
                "sha256": self.digest}  # read back only if still this file (source_check.py)
        return kept | ({"new_frames": self.new_frames} if self.new_frames is not None else {}) | (
            {"cut": True} if self.cut is not None else {})

    def reads(self) -> tuple[Path, ...]:
        return (self.source,)

    def stream(self) -> VideoFacts:
        return self.facts


@dataclass
class ExtensionBase:
    """What an extension continues from: the source's frames kept, their latents, the start picture."""
    source: Path
    frames: int  # the source's pixel frames kept
    fps: float
    start: torch.Tensor  # (1, 16, 1, h, w)
    video: torch.Tensor  # (1, 16, T, h, w): the history the new sections follow
    pixels: np.ndarray  # the start picture at the working size, for the image encoder
    size: tuple[int, int]  # the source's (width, height)
    new_frames: int | None = None  # frames the new part keeps (None: its whole sections)
    cut: bool = False  # a branch: only the source's first `frames` frames are kept
    skip: int = 0  # new frames left out at the start: the source shows them before the cut (0-3)

    @property
    def latent_frames(self) -> int:
        return self.video.shape[2]


@dataclass
class Continuing(Beginning):
    """An extension's beginning: the source's frames stay first, as they are, at their size."""
    prefix: ExtensionBase | None = None

    def decode_span(self, index: int, count: int, settings: SectionSettings, available: int) -> int:
        """The first section decodes the newest two windows (the source's last latents give the blend its
        context) but keeps only its own frames (`kept`)."""
        if index == 0:
            return min(2 * settings.window, available)
        return super().decode_span(index, count, settings, available)

    def kept(self, index: int, pixels: torch.Tensor, settings: SectionSettings) -> torch.Tensor:
        if index == 0:  # its own frames, less those a branch's source shows before its cut
            pixels = pixels[:, :, -4 * settings.window + self.prefix.skip:]
        return to_size(pixels, *self.prefix.size)

    def joined(self) -> dict:
        prefix = self.prefix
        return {"before": Copied(prefix.source, prefix.frames, cut=prefix.cut), "fps": prefix.fps,
                "new_frames": prefix.new_frames}

    def joins(self) -> dict:
        """So the run can be resumed and its video extended again (ExtendedVideo.recalled reads it)."""
        prefix = self.prefix
        record = {"video": str(prefix.source), "frames": prefix.frames, "latents": prefix.latent_frames,
                  "sha256": source_digest(prefix.source)}  # a resume reads only this very file (source_check.py)
        if prefix.new_frames is not None:
            record["new_frames"] = prefix.new_frames
        if prefix.cut:
            record["cut"] = True
        return record

    def replayed(self, video: torch.Tensor, index: int, count: int, window: int, mode: SamplingMode) -> torch.Tensor:
        return video[:, :, : self.prefix.latent_frames + (index + 1) * window]  # the source's, then the new


def extension_base(origin: ExtendedVideo, models, manager, request, window: int) -> ExtensionBase:
    """The source's kept frames' latents (its saved ones, else its last frames encoded) and start picture."""
    facts, source, cut = origin.facts, origin.source, origin.cut
    frames = facts.frames if cut is None else cut
    saved = origin.source_latents
    if saved is not None:  # made here: its own latents and picture
        pixels = crop_to_bucket(request.image, request.method.resolution)
        video, skip = latents_before(saved.video, frames)
        return ExtensionBase(source, frames, facts.fps, saved.start, video, pixels, (facts.width, facts.height),
                             origin.new_frames, cut=cut is not None, skip=skip)
    width, height = working_size(facts.width, facts.height, request.method.resolution)
    pixels = resized(np.asarray(first_frame(source)), width, height)
    # Enough latent frames for the packed context and the first decode (two windows).
    wanted = min(max(CONTEXT_FRAMES, 2 * window), (frames - 1) // 4 + 1)
    tail = np.stack([resized(f, width, height) for f in last_frames(source, 4 * wanted - 3, end=frames)])
    vae = models.vae
    with manager.use(vae):
        start = encode_latent(vae, pixels)
        x = torch.from_numpy(tail).float().div(127.5).sub(1).permute(3, 0, 1, 2).unsqueeze(0)
        with torch.no_grad():
            video = vae.encode(x.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        video = (video * vae.config.scaling_factor).float().cpu()
    return ExtensionBase(source, frames, facts.fps, start, video, pixels, (facts.width, facts.height),
                         origin.new_frames, cut=cut is not None)


def latents_before(video: torch.Tensor, frames: int) -> tuple[torch.Tensor, int]:
    """(the latent frames whose pixels all lie before frame `frames`, how many frames before it the
    next latent holds): a video of F frames made here has (F - 1) / 4 + 1 latent frames."""
    kept = (frames - 1) // 4 + 1
    return video[:, :, :kept], frames - (4 * (kept - 1) + 1)


ORIGIN = ExtendedVideo  # how kinds.recalled finds this kind
