"""Finishing a made video: upscaling (spandrel's upscaler models, tiled) and frame interpolation (RIFE 4.x,
or ffmpeg's minterpolate when there are no RIFE weights), as runs with records, Stop and resume.

    request.py     what a finishing run is asked to do, validated once
    upscalers.py   which upscaler files exist, named defaults, loading through spandrel
    tiles.py       one frame through an upscaler in overlapping tiles under a memory budget
    rife.py        the RIFE 4.x network (IFNet), written from its published architecture
    frames.py      frames streamed from and into ffmpeg, in parts that a resume keeps
    finishing_run.py  the run: record, events, Stop, resume
"""
