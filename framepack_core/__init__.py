"""FramePack image-to-video: the method. Knows tensors and models; never imports gradio.

Public API: a request in, a stream of events out, a cancel handle (threading.Event).
"""
from .engine import generate, run
from .events import Event, Failed, Finished, Notice, Preview, SectionDone, Stage, Step
from .request import GenerationRequest
from .schedule import section_count, video_frame_count

__all__ = [
    "Event", "Failed", "Finished", "GenerationRequest", "Notice", "Preview", "SectionDone", "Stage", "Step",
    "generate", "run", "section_count", "video_frame_count",
]
