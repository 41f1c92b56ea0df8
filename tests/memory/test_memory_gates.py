"""A step cache that skips blocks saves their copies: the streamer asks the run's gates (memory/gates.py)."""
import torch

from bench.support.synthetic import section_inputs, SMALL_CONFIG, small_transformer
from framepack_core.speed.precision import tensor_bytes
from framepack_core.speed.step_cache import step_cache
from memory import ModelManager, SimulatedDevice

STEPS = 8


def run_steps(model, inputs, manager, cached: bool, method: str = "teacache", threshold: float = 0.3):
    """Per call: (bytes copied during it, blocks computed in it, output)."""
    calls = []
    blocks = len(model.transformer_blocks) + len(model.single_transformer_blocks)
    with manager.use(model) if manager else _nothing(), step_cache(
            model, cached, method, threshold, STEPS, gates=manager.gates if manager else None) as cache:
        for step in range(STEPS):
            moved = manager.device.bytes_moved if manager else 0
            computed = cache.computed if cache else 0
            out = model(**{**inputs, "timestep": torch.tensor([1000.0 * (1 - step / STEPS)])})[0]
            calls.append(((manager.device.bytes_moved - moved) if manager else 0,
                          (cache.computed - computed) if cache else blocks, out))
        placement = manager.placement(model) if manager else None
        plan, decision_bytes = (placement.plan if manager else None), 0
        if placement is not None:  # what a skipped step must still copy: block 0, if it streams (TeaCache decides in it)
            first = placement.blocks.index(model.transformer_blocks[0])
            decision_bytes = 0 if plan.resident[first] else placement.block_groups[first].nbytes
    return calls, (plan, decision_bytes)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@torch.no_grad()
def test_skipped_steps_copy_nothing_and_outputs_match_the_resident_model():
    model = small_transformer(num_single_layers=12)
    inputs = section_inputs(SMALL_CONFIG, 8, 8)
    resident, _ = run_steps(model, inputs, None, cached=True)
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3, reserve_bytes=0)
    streamed, (plan, decision_bytes) = run_steps(model, inputs, manager, cached=True)
    manager.release()
    blocks = len(plan.resident)
    skipped = [i for i, (_, computed, _) in enumerate(streamed) if computed == 0]
    assert skipped and len(skipped) < STEPS  # the threshold skips some steps, not all
    # Block 0 (where TeaCache decides) is always needed, so it is copied ahead across the end of a
    # step: the first step also copies the second's. After that, a step costs its blocks only, and a
    # skipped step nothing but that one block.
    assert streamed[0][0] == plan.streamed_bytes + decision_bytes and streamed[0][1] == blocks
    for moved, computed, _ in streamed[1:]:
        assert computed in (0, blocks)
        assert moved == (plan.streamed_bytes if computed else decision_bytes)
    assert all(torch.equal(a[2], b[2]) for a, b in zip(streamed, resident))  # same decisions, same bits
    assert all(manager.gates.gate(b) is None for b in model.transformer_blocks)  # the cache removed its gate


@torch.no_grad()
def test_without_a_gate_every_streamed_block_is_copied_every_pass():
    model = small_transformer(num_single_layers=6)
    inputs = section_inputs(SMALL_CONFIG, 8, 8)
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3, reserve_bytes=0)
    calls, (plan, _) = run_steps(model, inputs, manager, cached=False)
    manager.release()
    assert [moved for moved, _, _ in calls[1:]] == [plan.streamed_bytes] * (STEPS - 1)


@torch.no_grad()
def test_a_gate_that_says_false_keeps_the_block_off_the_device():
    model = small_transformer(num_single_layers=6)
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3, reserve_bytes=0)
    with manager.use(model):
        streamer = manager.placement(model).streamer
        skip = blocks[streamer.order[1]]
        handle = manager.gates.add(blocks, lambda block, next_pass: block is not skip)
        loads = streamer.loads
        for _ in range(3):
            streamer.before(streamer.order[1])  # what its forward pre-hook does
            streamer.after(streamer.order[1])
        assert streamer.loads == loads and streamer.skipped == 3
        handle.remove()
        assert manager.gates.gate(skip) is None
    manager.release()


@torch.no_grad()
def test_first_block_cache_skips_copy_nothing_either():
    model = small_transformer(num_single_layers=6)
    inputs = section_inputs(SMALL_CONFIG, 8, 8)
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=tensor_bytes(model) // 3, reserve_bytes=0)
    calls, (plan, decision_bytes) = run_steps(model, inputs, manager, cached=True, method="first-block",
                                               threshold=0.9)
    manager.release()
    blocks = len(plan.resident)
    assert any(computed == 1 for _, computed, _ in calls)  # block 0 always runs; the others skipped
    for moved, computed, _ in calls[1:]:
        assert computed in (1, blocks)
        assert moved == (plan.streamed_bytes if computed == blocks else decision_bytes)
