"""The model manager: whole models in and out of the (simulated) device under one budget."""
import copy
import logging

import pytest
import torch

from memory import BudgetError, ModelManager, SimulatedDevice


class Net(torch.nn.Module):
    """A small model with a block list, like the encoders and the transformer in miniature."""

    def __init__(self, width=16, blocks=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Linear(4, width)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(blocks))
        self.register_buffer("scale", torch.full((width,), 0.5))

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = torch.tanh(layer(x)) * self.scale
        return x


def size(manager, model):
    placement = manager.placement(model)
    return placement.full_bytes


def make(budget):
    device = SimulatedDevice()
    return device, ModelManager(device, budget_bytes=budget, reserve_bytes=0)


@torch.no_grad()
def test_cpu_manager_leaves_models_alone():
    net = Net()
    before = [p.data_ptr() for p in net.parameters()]
    manager = ModelManager("cpu")
    with manager.use(net, None):
        net(torch.ones(1, 4))
    assert [p.data_ptr() for p in net.parameters()] == before and manager.placement(net) is None


@torch.no_grad()
def test_everything_stays_resident_when_it_fits():
    a, b = Net(seed=1), Net(seed=2)
    x = torch.randn(2, 4)
    want_a, want_b = a(x), b(x)
    device, manager = make(1 << 20)
    with manager.use(a):
        assert torch.equal(a(x), want_a)
    with manager.use(b):
        assert torch.equal(b(x), want_b)
    placed = [manager.placement(m) for m in (a, b)]
    assert all(p.on_device and not p.plan.streams for p in placed)  # no eviction without need
    assert device.current_bytes == sum(p.full_bytes for p in placed)
    assert device.holds(a.embed.weight) and device.holds(a.scale)


@torch.no_grad()
def test_models_move_in_and_out_under_the_budget():
    a, b = Net(seed=1), Net(seed=2)
    x = torch.randn(2, 4)
    want_a, want_b = a(x), b(x)
    device, manager = make(1 << 20)
    with manager.use(a):
        pass
    one_model = size(manager, a)
    device, manager = make(one_model + one_model // 2)  # room for one model at a time
    for _ in range(2):
        with manager.use(a):
            assert torch.equal(a(x), want_a) and device.holds(a.embed.weight)
        with manager.use(b):
            assert torch.equal(b(x), want_b)
            assert not manager.placement(a).on_device and not device.holds(a.embed.weight)
    assert device.peak_bytes <= manager.budget_bytes
    assert torch.equal(a(x), want_a)  # evicted models run on the host copy


@torch.no_grad()
def test_text_encoders_together_the_larger_one_streams():
    small, large = Net(width=8, blocks=4, seed=1), Net(width=64, blocks=8, seed=2)
    x = torch.randn(2, 4)
    want_small, want_large = small(x), large(x)
    device, manager = make(1 << 20)
    with manager.use(small, large):
        whole = device.current_bytes
        full_large = size(manager, large)
    device, manager = make(whole - full_large // 2)
    with manager.use(small, large):
        assert not manager.placement(small).plan.streams  # the small one goes in whole
        assert manager.placement(large).plan.streams
        assert torch.equal(small(x), want_small) and torch.equal(large(x), want_large)
    assert device.peak_bytes <= manager.budget_bytes


@torch.no_grad()
def test_nested_use_pushes_the_outer_model_off_and_brings_it_back():
    transformer, vae = Net(width=32, seed=1), Net(width=16, seed=2)
    x = torch.randn(2, 4)
    want_t, want_v = transformer(x), vae(x)
    device, manager = make(1 << 20)
    with manager.use(transformer):
        budget = device.current_bytes + 64  # the transformer fills it; the VAE needs room
    device, manager = make(budget)
    with manager.use(transformer):
        assert torch.equal(transformer(x), want_t)
        with manager.use(vae):
            assert not manager.placement(transformer).on_device
            assert torch.equal(vae(x), want_v)
        assert manager.placement(transformer).on_device and not manager.placement(vae).on_device
        assert torch.equal(transformer(x), want_t)
    assert device.peak_bytes <= budget


def test_short_of_room_follows_the_room_left_beside_the_weights():
    vae = Net()
    _, roomy = make(1 << 20)
    roomy.work_bytes = 1 << 19
    with roomy.use(vae):
        assert roomy.room_bytes() == (1 << 20) - size(roomy, vae) and not roomy.short_of_room()
    roomy.release()
    _, tight = make(1 << 20)
    tight.work_bytes = 1 << 20
    with tight.use(vae):
        assert tight.short_of_room()
    assert not ModelManager("cpu", work_bytes=1 << 40).short_of_room()  # no device: nothing to be short of


def test_a_budget_below_the_fixed_part_is_a_clear_error():
    net = Net(width=64)
    _, manager = make(1000)
    with pytest.raises(BudgetError, match="budget"):
        with manager.use(net):
            pass
    with pytest.raises(BudgetError):
        ModelManager(SimulatedDevice(), budget_bytes=1 << 20, reserve_bytes=1 << 21)


@torch.no_grad()
def test_a_later_manager_on_the_same_device_evicts_what_an_earlier_one_left(caplog):
    a, b = Net(seed=1), Net(seed=2)
    x = torch.randn(2, 4)
    want_b = b(x)
    device, first = make(1 << 20)
    with first.use(a):
        one_model = size(first, a)
    second = ModelManager(device, budget_bytes=one_model + one_model // 2)
    with second.use(b):
        assert not second.placement(a).on_device
        assert torch.equal(b(x), want_b)
    assert device.current_bytes <= second.budget_bytes


def test_a_new_manager_with_the_same_budget_keeps_what_is_placed_and_another_budget_replans():
    net = Net()
    device, first = make(1 << 20)
    with first.use(net):
        placement = first.placement(net)
    with ModelManager(device, budget_bytes=1 << 20).use(net):
        assert first.placement(net) is placement and placement.on_device and not placement.plan.streams
        moved = device.bytes_moved
    assert device.bytes_moved == moved == placement.full_bytes  # placed once, not copied again
    with ModelManager(device, budget_bytes=5000).use(net):
        assert placement.plan.streams and device.current_bytes <= 5000


@torch.no_grad()
def test_a_model_converted_behind_the_managers_back_is_packed_again(caplog):
    net = Net()
    reference = copy.deepcopy(net).double()
    device, manager = make(5000)  # small enough that the blocks stream
    with manager.use(net):
        assert manager.placement(net).plan.streams
    net.double()
    x = torch.randn(2, 4, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="memory"):
        with manager.use(net):
            assert net.embed.weight.dtype == torch.float64 and device.holds(net.embed.weight)
            assert torch.equal(net(x), reference(x))  # the old streamer's hooks are gone
    assert "moved outside the memory manager" in caplog.text


def test_cuda_manager_without_cuda_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        ModelManager("cuda")
