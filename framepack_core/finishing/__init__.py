"""Finishing a made video: upscaling (spandrel's upscaler models, tiled) and frame interpolation (RIFE 4.x,
or ffmpeg's minterpolate when there are no RIFE weights), as runs with records, Stop and resume.

    request.py         what a finishing run is asked to do, validated once (and the disk check)
    finishing_run.py   the run: record, events, Stop, resume after its last whole part
    methods.py         upscale a frame / put RIFE's frames between two: sizes, rates, counts, what is recorded
    upscalers.py       the upscalers folder, named defaults (downloaded on first use), loading through spandrel
    spandrel_import.py importing spandrel where torchvision does not import
    tiles.py           one frame through an upscaler in overlapping tiles under a memory budget
    rife.py            the RIFE 4.x network (IFNet), written from its published architecture
    minterpolate.py    ffmpeg's minterpolate, the fallback without RIFE weights
    frames.py          frames streamed from and into ffmpeg, in parts that a resume keeps
    placement.py       the device and the VRAM budget
    after_run.py       the steps a generation asks for (--upscale, --interpolate), run on its video
    per_section.py     the first of those steps made per finished section, as the video is made
"""
