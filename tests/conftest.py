"""Test session setup: offline, and a private cache for the tiny model set.

Set before anything imports huggingface_hub, so no test can reach the network, and tests
never touch (or depend on) the developer's own ~/.cache.
"""
import atexit
import os
import shutil
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="framepack-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["FRAMEPACK_CACHE"] = _CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("FRAMEPACK_MODELS_DIR", None)

from framepack_core.reproducible import pin_blas  # noqa: E402  (no torch: before any test computes)

pin_blas()  # as app.py does: the tests hold the app's bit-exactness promises under the same switch


@pytest.fixture(scope="session")
def tiny_models():
    """The tiny set, built once per session into the private cache and loaded like real weights."""
    from framepack_core.models.loading import load_models

    return load_models("tiny")


def _noise_png(folder, width: int, height: int, seed: int):
    import numpy as np
    from PIL import Image

    path = folder / f"noise-{width}x{height}-{seed}.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def picture(tmp_path_factory):
    """A 100 x 70 picture of noise, as a PNG file: landscape, small, and never the same on two pixels."""
    return _noise_png(tmp_path_factory.mktemp("pictures"), 100, 70, seed=0)


@pytest.fixture(scope="session")
def square_picture(tmp_path_factory):
    """A 64 x 64 picture of noise, as a PNG file."""
    return _noise_png(tmp_path_factory.mktemp("pictures"), 64, 64, seed=0)


@pytest.fixture
def tiny_files_as_real_set(monkeypatch):
    """For tests that lay the tiny set's files out as a real set's to exercise loading: the tiny
    tokenizer is not Llama 3's, which the load-time check (tests/models/test_real_tokenizers.py) rightly
    refuses, so that check is passed over here and only here."""
    import framepack_core.models.loading as loading

    monkeypatch.setattr(loading, "check_prompt_template", lambda *args, **kwargs: None)
