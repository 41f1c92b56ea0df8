"""FramePack image-to-video: the method. Knows tensors and models; never imports gradio.

    method/   the paper's arithmetic (torch only)     models/  model sets, loading, encoders
    media/    pictures in, video out                  speed/   kernels, FP8, step caches, compile
    starts/   how a run starts, one module per kind     run/     the run: its life, files and record
    engine/   the pipeline, its session and memory plan
    a front end's Start -> starts.begin -> request (validated) -> run.Run -> engine (the stages)

Nothing is imported here, so that `framepack_core.settings` and `.request` stay cheap to import.
"""
