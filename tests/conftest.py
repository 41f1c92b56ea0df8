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


@pytest.fixture(scope="session")
def tiny_models():
    """The tiny set, built once per session into the private cache and loaded like real weights."""
    from framepack_core.models import load_models

    return load_models("tiny")
