"""Block streaming on the simulated device: exact outputs, the ledger within budget, the pinning fallback."""
import logging
from contextlib import contextmanager

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from bench.support.synthetic import section_inputs, SMALL_CONFIG, small_transformer
from framepack_core.speed.precision import tensor_bytes
from memory import ModelManager, SimulatedDevice, find_block_lists


class Toy(torch.nn.Module):
    """Eight blocks whose run order is an argument, to exercise out-of-order and failing blocks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(8, 16)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(8))

    def forward(self, x, order=range(8)):
        x = self.embed(x)
        for i in order:
            x = torch.tanh(self.layers[i](x))
        return x


@contextmanager
def checking_blocks_run_on(device, model):
    """Hooks after the streamer's own: every block must see its weights in a device buffer."""
    def check(module, args):
        for tensor in [*module.parameters(), *module.buffers()]:
            assert device.holds(tensor), f"{type(module).__name__} ran with host weights"
    handles = [block.register_forward_pre_hook(check) for blocks in find_block_lists(model) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def transformer_case():
    model = small_transformer(num_single_layers=12)
    inputs = section_inputs(SMALL_CONFIG, 8, 8)
    with torch.no_grad():
        expected = model(**inputs)[0]
    return model, inputs, expected


@torch.no_grad()
def test_streamed_transformer_is_bit_identical_and_within_budget(transformer_case):
    model, inputs, expected = transformer_case
    device = SimulatedDevice()
    budget = tensor_bytes(model) // 3
    manager = ModelManager(device, budget_bytes=budget)
    with manager.use(model):
        plan = manager.placement(model).plan
        assert plan.streams and plan.slots >= 2  # at least one copy in flight ahead
        assert device.holds(model.x_embedder.proj.weight)  # the fixed part stays on the device
        with checking_blocks_run_on(device, model):
            first = model(**inputs)[0]
            moved = device.bytes_moved
            second = model(**inputs)[0]
            moved = device.bytes_moved - moved
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert device.peak_bytes <= budget
    assert moved == plan.streamed_bytes  # each streamed block copied once per pass, none twice
    manager.release()
    assert device.current_bytes == 0 and not device.holds(model.x_embedder.proj.weight)
    assert torch.equal(model(**inputs)[0], expected)  # back on the host, still the same weights


@torch.no_grad()
def test_streamed_llama_hidden_states_are_bit_identical():
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    llama = LlamaModel(config).eval()
    ids = torch.randint(0, 128, (1, 20))
    expected = llama(input_ids=ids, output_hidden_states=True).hidden_states
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(llama) // 2)
    with manager.use(llama):
        assert [len(blocks) for blocks in find_block_lists(llama)] == [8]
        assert manager.placement(llama).plan.streams
        got = llama(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert device.peak_bytes <= manager.budget_bytes


@torch.no_grad()
def test_streamed_blocks_are_pinned_from_the_second_pass(transformer_case):
    model, inputs, expected = transformer_case
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3)
    with manager.use(model):
        placement = manager.placement(model)
        model(**inputs)
        assert placement.pageable_bytes == placement.plan.streamed_bytes  # a single pass pins nothing
        model(**inputs)
        assert placement.pageable_bytes == 0 and device.pinned_bytes >= placement.plan.streamed_bytes
        assert not placement.rest.pinned  # copied once per placement: not worth locked memory
        assert torch.equal(model(**inputs)[0], expected)
    manager.release()


@torch.no_grad()
def test_without_pinned_memory_it_streams_through_staging_buffers(transformer_case, caplog):
    model, inputs, expected = transformer_case
    # Room to pin only a few blocks; tiny staging buffers so every copy takes many chunks.
    device = SimulatedDevice(pin_limit_bytes=tensor_bytes(model) // 10, staging_bytes=4096, pin_arena_bytes=1 << 20)
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3)
    with caplog.at_level(logging.WARNING, logger="memory"):
        with manager.use(model):
            placement = manager.placement(model)
            got = [model(**inputs)[0] for _ in range(3)]
    streamed = [placement.block_groups[i] for i in placement.streamer.order]
    assert 0 < placement.pageable_bytes < placement.plan.streamed_bytes and any(g.pinned for g in streamed)
    assert "could not be pinned" in caplog.text
    assert all(torch.equal(g, expected) for g in got)
    manager.release()


def fail(module, args):
    raise RuntimeError("boom")


@torch.no_grad()
def test_blocks_out_of_order_and_a_failing_block_still_give_exact_results():
    toy = Toy().eval()
    x = torch.randn(3, 8)
    orders = [range(8), [7, 0, 3, 3, 1], [5, 6, 7, 0, 1]]
    expected = [toy(x, order) for order in orders]
    device = SimulatedDevice()
    layer = tensor_bytes(toy.layers[0])
    manager = ModelManager(device, budget_bytes=tensor_bytes(toy.embed) + 1024 + 3 * layer)
    with manager.use(toy):
        streamer = manager.placement(toy).streamer
        assert streamer is not None and len(streamer.order) == 8
        for order, want in zip(orders, expected):
            assert torch.equal(toy(x, order), want)
        failing = toy.layers[2].register_forward_pre_hook(fail)  # runs after the streamer loaded the block
        with pytest.raises(RuntimeError, match="boom"):
            toy(x)
        failing.remove()
        assert torch.equal(toy(x), expected[0])
    assert device.peak_bytes <= manager.budget_bytes


def test_host_copies_share_pinned_arenas_instead_of_rounding_each_up():
    """torch rounds each pinned request up to a power of two; groups packed into arenas waste little."""
    sizes = [283_000, 264_000, 700_000, 5_000] * 6
    device = SimulatedDevice(pin_arena_bytes=1 << 21)
    buffers = [device.host_buffer(n, pinned=True) for n in sizes]
    assert [b.numel() for b in buffers] == sizes
    assert device.pinned_bytes <= 1.2 * sum(sizes) + (1 << 21)
    ends = sorted((b.data_ptr(), b.data_ptr() + b.numel()) for b in buffers)
    assert all(end <= start for (_, end), (start, _) in zip(ends, ends[1:]))  # no two overlap
    assert all(b.data_ptr() % 256 == buffers[0].data_ptr() % 256 for b in buffers)
