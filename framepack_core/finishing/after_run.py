"""Finishing steps asked for with a generation (`generate --upscale 2 --interpolate 2`, the settings table's
`upscale`, `upscaler`, `interpolate`): when the run's video is made, each step is a FinishingRun on it (the
upscale first, the interpolation on the upscaled video), into a file of its own beside it; the generation's
record lists what each applied (model file and SHA-256) and where it went, and the last MP4's metadata keeps
the generation's settings, so a remake does the steps again.

The first step is made as the video is, per section where it can be (per_section.py, which says where not):
a stopped or killed run keeps the finished part, and its step, run here at the end, takes those parts over.
"""
from __future__ import annotations

from pathlib import Path

from framepack_core.events import Failed, Finished, Notice, Status


def steps(output) -> list[tuple[str, int, str | None]]:
    """(operation, factor, model) in the order they run, from a request's output settings."""
    wanted = []
    if output.upscale > 1:
        wanted.append(("upscale", output.upscale, output.upscaler))
    if output.interpolate > 1:
        wanted.append(("interpolate", output.interpolate, None))
    return wanted


def as_made(files, request, emit):
    """`emit` for the generation `files` is making: the first step follows its sections (per_section.py)."""
    from .per_section import SectionFinishing

    wanted = steps(request.output)
    return SectionFinishing(files, request, wanted[0]).wrap(emit) if wanted else emit


def kept(files, request) -> list[dict]:
    """A stopped or failed generation's record of its first step's finished part (per_section.join_kept)."""
    from .per_section import join_kept

    wanted = steps(request.output)
    try:
        made = join_kept(files, wanted[0]) if wanted else None
    except (OSError, RuntimeError, ValueError):  # a full disk: the parts themselves are kept for the resume
        return []
    return [made] if made else []


def check(request) -> None:
    """Refuse at the start, in one sentence, an upscaler that is neither a file, one in upscalers/, nor a named
    default (named ones download when they are needed)."""
    from . import upscalers

    for operation, factor, model in steps(request.output):
        if operation == "upscale" and model is not None and model not in upscalers.NAMED:
            upscalers.resolve(model, factor)


def finish_made_video(video: Path, request, emit, cancel) -> list[dict]:
    """Each step on the video in turn; what each applied, as the generation's record lists them. A step that
    cannot run or fails is a Notice (the generated video stays, finished) and ends the chain."""
    from framepack_core.failures import ModelsUnavailableError

    from framepack_core.run.files import files_of

    from . import per_section
    from .finishing_run import FinishingRun
    from .placement import device_and_budget
    from .request import FinishRequest

    applied, source = [], Path(video)
    device, budget = device_and_budget(request.speed.vram_budget_gb)
    for operation, factor, model in steps(request.output):
        try:
            run = FinishingRun.start(FinishRequest(operation, source, factor, model=model, folder=source.parent,
                                                   crf=request.output.crf, part_frames=per_section.PART_FRAMES),
                                     device, budget, say=emit_say(emit))
        except (ValueError, ModelsUnavailableError) as error:
            emit(Notice(f"{operation} x{factor} was not applied: {error}"))
            applied.append({"operation": operation, "factor": factor, "status": Status.FAILED, "error": str(error)})
            break
        run.cancel = cancel  # Stop ends the finishing too
        if source == Path(video):  # the first step: the parts made as the video was are its first parts
            per_section.adopt(files_of(source), run)
        outcome = run.execute(None, lambda event: None if isinstance(event, (Finished, Failed)) else emit(event))
        done = isinstance(outcome, Finished) and not outcome.stopped
        applied.append(run.applied() | {"status": run.record().status, "video": run.files.video.name if done
                                        else None, "record": run.files.record.name})
        if not done:
            reason = outcome.message if isinstance(outcome, Failed) else "stopped"
            emit(Notice(f"{operation} x{factor} did not finish ({reason}); resume it with python app.py "
                        f"{operation} --resume {run.files.record}"))
            break
        emit(Notice(f"{operation} x{factor}: wrote {run.files.video}"))
        source = run.files.video
    return applied


def emit_say(emit):
    from framepack_core.events import Stage, StageName

    return lambda line: emit(Stage(StageName.LOADING, line))
