"""The engine through the memory manager on the simulated device: the tiny set, a small budget."""
import numpy as np
import pytest
import torch
from PIL import Image

from bench.offload import tensor_bytes
from framepack_core import Finished, GenerationRequest, generate
from framepack_core.models.loading import load_models
from memory import ModelManager, SimulatedDevice
from mp4info import mp4_info


@pytest.fixture(scope="module")
def models(tiny_models):
    # A private copy (same cached files): placing models repacks their weights and may switch VAE
    # tiling on, which the session's shared tiny set must not see.
    return load_models("tiny")


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("pic") / "start.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)).save(path)
    return path


def video(models, picture, manager, path):
    req = GenerationRequest(image=picture, prompt="a red balloon rises", seconds=1, steps=2, resolution=128, crf=0)
    finished = list(generate(req, models, path, None, manager))[-1]
    assert isinstance(finished, Finished), finished
    return mp4_info(finished.video)[1]


def test_streaming_the_transformer_changes_no_pixel(models, picture, tmp_path):
    roomy = video(models, picture, ModelManager(SimulatedDevice(), budget_bytes=1 << 30, tiling_bytes=0),
                  tmp_path / "roomy.mp4")
    device = SimulatedDevice()
    budget = int(0.9 * tensor_bytes(models.transformer))  # the transformer must stream; the others fit whole
    manager = ModelManager(device, budget_bytes=budget, tiling_bytes=0)
    tight = video(models, picture, manager, tmp_path / "tight.mp4")
    assert np.array_equal(roomy, tight)
    assert manager.placement(models.transformer).plan.streams
    assert device.peak_bytes <= budget
    # The VAE decoded inside the transformer's `use`: the transformer made room and came back.
    assert manager.placement(models.transformer).on_device


def test_vae_tiles_when_memory_is_short(models, picture, tmp_path):
    manager = ModelManager(SimulatedDevice(), budget_bytes=int(0.9 * tensor_bytes(models.transformer)))
    video(models, picture, manager, tmp_path / "tiled.mp4")  # the default threshold is far above this budget
    assert models.vae.use_tiling
    models.vae.disable_tiling()


def test_cli_manager_without_a_gpu_keeps_everything_on_the_cpu(models, capsys):
    from ui.cli import make_manager

    manager = make_manager(torch.device("cpu"), 6.0, models, 640, 9)
    assert not manager.manages_device
    assert "--vram-budget" in capsys.readouterr().err
