"""The vocabulary of a request: every choice and default a user can name, in plain Python.

Imported by the command line's parser before anything heavy, and by the modules that implement
each choice, so that a name is spelt in one place. No torch, no model libraries here.
"""
from __future__ import annotations

MODEL_SETS = ("framepack", "framepack-f1", "tiny")
# Each model set's own sampling order: the I2V checkpoint was trained for inverted sampling,
# F1 for forward sampling (lllyasviel/FramePack, demo_gradio.py and demo_gradio_f1.py).
DEFAULT_MODES = {"framepack": "inverted", "framepack-f1": "forward", "tiny": "inverted"}
MODES = ("inverted", "forward")
SAMPLER_VARIANTS = ("bh1", "bh2")
ATTENTION_KERNELS = ("auto", "sage", "flash", "xformers", "sdpa")
# storage: the blocks' weights kept in FP8, multiplied in bf16; fast: multiplied in FP8 too
# (compute capability 8.9+). Records from before the modes say true (storage) or false (off).
FP8_MODES = ("off", "storage", "fast")
CACHE_METHODS = ("magcache", "teacache", "first-block")  # the first is the default (README: why)
DEFAULT_CACHE_THRESHOLD = 0.15

FPS = 30  # the published models' frame rate
DEFAULT_SEED = 31337
MIN_RESOLUTION, MAX_RESOLUTION = 128, 1536
MAX_SECONDS = 120.0
MAX_STEPS = 100
MAX_SEED = 2**63 - 1
