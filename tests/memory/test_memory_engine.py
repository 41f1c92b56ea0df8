"""The engine through the memory manager on the simulated device: the tiny set, a small budget."""
import numpy as np
import pytest
import torch

from framepack_core.events import Finished, SectionDone
from framepack_core.models.loading import load_models
from framepack_core.engine.memory_plan import untiled_decode_bytes
from framepack_core.engine.session import make_manager
from framepack_core.speed.precision import tensor_bytes
from tests.support.helpers import run_events, tiny_request
from memory import ModelManager, SimulatedDevice
from tests.support.mp4info import mp4_info


@pytest.fixture(scope="module")
def models(tiny_models):
    # A private copy (same cached files): placing models repacks their weights and may switch VAE
    # tiling on, which the session's shared tiny set must not see.
    return load_models("tiny")


def video(models, picture, manager, path, on_event=None):
    finished = run_events(tiny_request(picture, steps=2, crf=0), models, path, manager, on_event=on_event)[-1]
    assert isinstance(finished, Finished), finished
    return mp4_info(finished.video)[1]


def test_streaming_the_transformer_changes_no_pixel(models, picture, tmp_path):
    roomy = video(models, picture, ModelManager(SimulatedDevice(), budget_bytes=1 << 30),
                  tmp_path / "roomy.mp4")
    device = SimulatedDevice()
    budget = int(0.9 * tensor_bytes(models.transformer))  # the transformer must stream; the others fit whole
    manager = ModelManager(device, budget_bytes=budget)
    seen = []  # the transformer's placement as each section ends (the run gives the device back after)

    def look(event, run):
        if isinstance(event, SectionDone):
            placement = manager.placement(models.transformer)
            seen.append((placement.plan.streams, placement.on_device))

    tight = video(models, picture, manager, tmp_path / "tight.mp4", look)
    assert np.array_equal(roomy, tight)
    # It streamed; and the VAE decoded inside the transformer's `use`: the transformer made room and came back.
    assert seen == [(True, True)]
    assert device.peak_bytes <= budget
    assert not manager.placement(models.transformer).on_device  # given back after the run


def test_vae_tiles_when_memory_is_short(models, picture, tmp_path):
    manager = ModelManager(SimulatedDevice(), budget_bytes=int(0.9 * tensor_bytes(models.transformer)),
                           work_bytes=untiled_decode_bytes(128))  # FramePack's figure is far above this budget
    video(models, picture, manager, tmp_path / "tiled.mp4")
    assert models.vae.use_tiling
    models.vae.disable_tiling()


def test_without_a_gpu_everything_stays_on_the_cpu(models, picture):
    manager = make_manager(torch.device("cpu"), 6.0, models, tiny_request(picture))
    assert not manager.manages_device and manager.budget_bytes is None
