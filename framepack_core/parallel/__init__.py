"""One video on several devices: sequence parallelism over FramePack's packed context.

Every rank runs the same pipeline (generation.VideoPipeline) on the same request; only rank 0's
files and events count (workers write into a temporary folder and tell no one). Inside the
transformer, each rank keeps a contiguous share of the packed image tokens (history 4x/2x/1x and
the noisy latents, with their rotary frequencies) and all text and picture tokens; attention
exchanges heads for tokens (Ulysses all-to-all) or, where the heads do not divide among the ranks,
gathers the keys and values; the last block's output is gathered once per transformer call.

    shard.py      where the tokens are split and gathered (hooks on the blocks)
    attention.py  the attention processor: diffusers' own, its kernel call made sequence parallel
    guidance.py   CFG-parallel: the two passes of a step on two halves of the ranks; which split a run uses
    group.py      the process groups (CFG x sequence): start, timeouts, the shared Stop flag, what was exchanged
    launch.py     rank 0's side: start the other ranks, run, tell a lost rank in one sentence
    worker.py     the other ranks' side
"""
