"""FramePack image-to-video: the method. Knows tensors and models; never imports gradio.

    method/   the paper's arithmetic (torch only)     models/  model sets, loading, encoders
    media/    pictures in, video out                  speed/   kernels, FP8, step caches, compile
    request.py -> run.py (the one run path) -> generation.py (the stages), with session.py
    holding what outlives a run.

Nothing is imported here, so that `framepack_core.settings` and `.request` stay cheap to import.
"""
