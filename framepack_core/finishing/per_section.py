"""The first finishing step a generation asks for (`--upscale`, else `--interpolate` with RIFE), made as the video
is: after each section, the parts of its frames that no later section changes are upscaled (or interpolated) into
`.NAME.upscale-x2.parts/` beside the run. A stopped or killed generation keeps them; its resume makes only the
parts still missing; when the video is done, the finishing run on it (after_run.py) takes these parts over as a
resumed finishing run takes its own, so its result is the bytes of one made on the whole video.

Why the same bytes: a part covers source frames [(n-1)P, nP) (P = PART_FRAMES), the parts a FinishingRun cuts; the
frames are read from the video so far, whose finished sections are the same H.264 segments, decoded the same, as
in the finished video; the encoder is deterministic. A part is made here only when a whole part follows it among
the final frames, so it is never the last part (which takes the rest of the video) and an interpolated part's
last frame has its following frame.

Where it cannot be done: inverted sampling (the model sets' own order) makes the end of the video first, so its
new frames become final, counted from the first, only when the last section is done; then, and for ffmpeg's
minterpolate (one filter over the whole file) and the later steps of a chain (their source is the joined result of
the step before), the finishing runs on the finished video. See the README's "Finishing" for why."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from framepack_core.events import SectionDone, Stage, StageName
from framepack_core.run.files import RunFiles

from . import frames as streams

PART_FRAMES = 30  # source frames per part, as a FinishingRun's (request.PART_FRAMES); both read it from here
MODEL = "model.json"  # beside the parts: the model that made them (a resume with another file starts them over)


def staging_folder(files: RunFiles, operation: str, factor: int) -> Path:
    return files.folder / f".{files.name}.{operation}-x{factor}.parts"


class SectionFinishing:
    """Wraps a generation's `emit`: on each SectionDone, the parts that have become final are made."""

    def __init__(self, files: RunFiles, request, step: tuple[str, int, str | None] | None):
        self.step = step  # (operation, factor, model) of the first finishing step, as after_run.steps gives it
        self.files, self.request = files, request
        self.method = self.facts = None

    def wrap(self, emit):
        def emitting(event) -> None:
            emit(event)
            if isinstance(event, SectionDone) and self.step is not None:
                self.advance(event.video, event.final_frames, emit)
        return emitting

    def advance(self, video: Path, final: int, emit) -> int:
        """Make the parts whose frames (and the next part's) are among the first `final`; how many are done."""
        operation, factor, _ = self.step
        folder = staging_folder(self.files, operation, factor)
        done = streams.done_parts(folder)
        if (done + 2) * PART_FRAMES > final or not self._ready(video):
            return done
        if done and _model_of(folder) != _model(self.method.described()):  # the model file changed since
            shutil.rmtree(folder, ignore_errors=True)
            done = 0
        folder.mkdir(exist_ok=True)
        (folder / MODEL).write_text(json.dumps(_model(self.method.described())), encoding="utf-8")
        width, height = self.method.size(self.facts.width, self.facts.height)
        fps = self.facts.fps * (factor if operation == "interpolate" else 1)
        emit(Stage(StageName.WRITING, f"{operation} x{factor} of the frames made so far"))
        pairs = streams.with_following(streams.read_frames(video, skip=done * PART_FRAMES))
        try:
            while (done + 2) * PART_FRAMES <= final:
                writer = streams.PartWriter(streams.part_path(folder, done + 1), width, height, fps,
                                            self.request.output.crf)
                try:
                    for _ in range(PART_FRAMES):
                        frame, following = next(pairs)
                        for result in self.method.outputs(frame, following):
                            writer.send(result)
                    writer.finish()
                except BaseException:
                    writer.abandon()
                    raise
                done += 1
        finally:
            pairs.close()
        return done

    def _ready(self, video: Path) -> bool:
        """The step's method, loaded once; False (the step then runs on the finished video only) for minterpolate
        or a model that cannot be had, which the step itself reports when it runs."""
        if self.method is not None:
            return True
        from framepack_core.failures import ModelsUnavailableError

        from .methods import make_method
        from .placement import device_and_budget
        from .request import FinishRequest

        operation, factor, model = self.step
        try:
            request, self.facts = FinishRequest(operation, video, factor, model=model, folder=self.files.folder,
                                                crf=self.request.output.crf, part_frames=PART_FRAMES).validated()
            self.method = make_method(request, *device_and_budget(self.request.speed.vram_budget_gb))
        except (ValueError, ModelsUnavailableError):
            self.method = None
        if self.method is None:
            self.step = None
        return self.method is not None


def so_far_video(files: RunFiles, operation: str, factor: int) -> Path:
    """Where a stopped or failed generation's finished part is shown (not a name a finishing run claims)."""
    return files.folder / f"{files.name}.{operation}-x{factor}-so-far.mp4"


def join_kept(files: RunFiles, step) -> dict | None:
    """After a stopped or failed generation: the parts made so far joined into one MP4 to watch (they stay,
    for the resume); what the record says of them. None when there are none."""
    from framepack_core.media.segments import concat_mp4
    from framepack_core.media.video_files import probe_video

    operation, factor, _ = step
    folder = staging_folder(files, operation, factor)
    parts = [streams.part_path(folder, n) for n in range(1, streams.done_parts(folder) + 1)]
    if not parts:
        return None
    per_part = PART_FRAMES * (factor if operation == "interpolate" else 1)
    fps = probe_video(parts[0]).fps  # told their true length, the parts join as a FinishingRun's do
    video = concat_mp4(parts, so_far_video(files, operation, factor), durations={p: per_part / fps for p in parts[:-1]})
    return {"operation": operation, "factor": factor, "status": "stopped", "parts_done": len(parts),
            "frames": per_part * len(parts), "partial_video": video.name}


def adopt(files: RunFiles, run) -> int:
    """Move the parts made as the video was into the finishing run `run` of its first step: it resumes after
    them. How many were taken."""
    folder = staging_folder(files, run.request.operation, run.request.factor)
    count = streams.done_parts(folder) if _model_of(folder) == _model(run.applied()) else 0
    for number in range(1, count + 1):
        streams.part_path(folder, number).replace(streams.part_path(run.parts, number))
    shutil.rmtree(folder, ignore_errors=True)
    so_far_video(files, run.request.operation, run.request.factor).unlink(missing_ok=True)
    return count


def _model(applied: dict) -> dict:
    """What must match for parts to be taken over: the method and its model file. Not the tile size: the free
    memory picks it (on the CPU always 512), and the run the parts are taken into may meet other free memory."""
    return {key: applied.get(key) for key in ("method", "model_file", "model_sha256")}


def _model_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MODEL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
