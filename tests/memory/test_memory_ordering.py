"""The ordered simulated device: a copy lands only when waited for, so a missing wait gives wrong numbers here.

Each test that breaks a wait on purpose first shows the same run exact with the wait in place.
"""
import pytest
import torch

from bench.support.synthetic import SMALL_CONFIG, section_inputs, small_transformer
from framepack_core.speed.precision import tensor_bytes
from memory import BlockStreamer, ModelManager, SimulatedDevice
from memory.device import POISON

STEPS = 3  # the first two stream from pageable memory through the staging ring, the third from pinned copies


@pytest.fixture(scope="module")
def model():
    return small_transformer(num_single_layers=6)


@pytest.fixture(scope="module")
def inputs():
    return section_inputs(SMALL_CONFIG, 8, 8)


def outputs(model, inputs, device=None):
    """The transformer's output at each step: resident (no device), or streamed through `device`."""
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3, reserve_bytes=0) if device else None
    with torch.no_grad(), manager.use(model) if manager else torch.no_grad():
        got = [model(**(inputs | {"timestep": torch.tensor([1000.0 - 300 * step])}))[0] for step in range(STEPS)]
        if manager:
            assert manager.placement(model).streamer is not None  # it streamed
    if manager:
        manager.release()
    return got


def test_a_copy_lands_only_when_waited_for():
    device = SimulatedDevice(ordered=True)
    dst, src = device.alloc(1024), torch.arange(1024, dtype=torch.int64).to(torch.uint8)
    event = device.copy_to_device(dst, src, src_pinned=True)
    assert device.copies_in_flight == 1 and bool((dst == POISON).all())
    assert torch.isnan(dst[:8].view(torch.float32)).all() and torch.isnan(dst[:8].view(torch.bfloat16)).all()
    device.compute_waits(event)
    assert device.copies_in_flight == 0 and torch.equal(dst, src)


def test_with_every_wait_the_ordered_device_is_exact(model, inputs):
    resident = outputs(model, inputs)
    device = SimulatedDevice(ordered=True, staging_bytes=1 << 12)
    streamed = outputs(model, inputs, device)
    assert all(torch.equal(a, b) for a, b in zip(resident, streamed))
    assert device.landed_on_wait > 0 and device.copies_in_flight == 0  # copies were in flight, and waited for


def test_without_the_streamers_wait_a_block_reads_a_slot_before_its_copy_landed(model, inputs, monkeypatch):
    resident = outputs(model, inputs)
    original = BlockStreamer.before

    def before_without_waiting(self, index):
        # BlockStreamer.before, minus its `self.device.compute_waits(copied)`: the block runs on its slot at once.
        self.device.compute_waits = lambda event: None
        try:
            original(self, index)
        finally:
            del self.device.compute_waits  # the device's own method again (placing resident parts waits)

    monkeypatch.setattr(BlockStreamer, "before", before_without_waiting)
    streamed = outputs(model, inputs, SimulatedDevice(ordered=True))
    nan = [int(torch.isnan(out).sum()) for out in streamed]
    print("outputs' NaN elements without the streamer's wait, per step:", nan, "of", streamed[0].numel())
    assert all(n == out.numel() for n, out in zip(nan, streamed))  # every block that streamed read poison
    assert not any(torch.isnan(out).any() for out in resident)


def test_without_the_staging_wait_a_refilled_staging_buffer_lands_the_wrong_bytes(model, inputs, monkeypatch):
    resident = outputs(model, inputs)
    device = SimulatedDevice(ordered=True, staging_bytes=1 << 12)  # every block crosses the ring many times
    monkeypatch.setattr(device, "_host_waits", lambda event: None)  # refill a staging buffer without waiting
    streamed = outputs(model, inputs, device)
    wrong = [not torch.equal(a, b) for a, b in zip(resident, streamed)]
    print("steps whose output differs without the staging wait:", wrong)
    # The fixed part and resident blocks, placed through the ring before the first step, landed wrong
    # bytes too, so every step is wrong (even the third, whose streamed blocks come from pinned copies).
    assert wrong == [True] * STEPS
