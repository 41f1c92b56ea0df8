"""FP8 weight storage and torch.compile on the tiny set: bytes, results, and the memory manager."""
import copy

import pytest
import torch

from framepack_core.events import Finished, Notice
from framepack_core.models.loading import load_models
from framepack_core.speed.precision import FP8, fp8_layers, is_fp8, store_fp8, tensor_bytes
from framepack_core.speed.prepare import compile_blocks
from memory import ModelManager, SimulatedDevice
from memory.device import align
from tests.support.helpers import run_events, tiny_request
from tests.support.sampling import sample


@pytest.fixture(scope="module")
def plain(tiny_models):
    return tiny_models.transformer


@pytest.fixture(scope="module")
def fp8(plain):
    model = copy.deepcopy(plain)  # conversion cannot be undone; the session's set must stay float32
    store_fp8(model)
    return model


def test_block_linear_weights_take_one_byte_and_the_rest_keeps_its_dtype(plain, fp8):
    layers = dict(fp8_layers(plain))
    blocks = [*plain.transformer_blocks, *plain.single_transformer_blocks]
    assert len(layers) == sum(isinstance(m, torch.nn.Linear) for b in blocks for m in b.modules())
    assert "transformer_blocks.0.norm1.linear" in layers and "single_transformer_blocks.1.proj_out" in layers
    converted = sum(layer.weight.numel() for layer in layers.values())
    assert tensor_bytes(fp8) == tensor_bytes(plain) - 3 * converted  # float32 -> e4m3fn: 4 bytes -> 1
    weights = {f"{name}.weight" for name in layers}
    for name, param in fp8.named_parameters():  # biases, norms, embedders and output layers unchanged
        assert param.dtype == (FP8 if name in weights else torch.float32), name
    assert fp8.dtype == torch.float32  # what the section loop casts inputs to: the compute dtype
    assert is_fp8(fp8) and not is_fp8(plain)
    assert store_fp8(fp8) == (tensor_bytes(fp8), tensor_bytes(fp8))  # once only


def test_fp8_changes_results_only_slightly(plain, fp8):
    exact, converted = sample(plain, None, sections=1)[0], sample(fp8, None, sections=1)[0]
    distance = ((converted - exact).norm() / exact.norm()).item()
    assert 0 < distance < 0.02


def streaming_budget(model):
    """Room for the fixed part and two of the three slots the manager wants: every block streams."""
    def packed(module):
        return sum(align(t.nbytes) for t in [*module.parameters(), *module.buffers()])

    blocks = [packed(b) for b in [*model.transformer_blocks, *model.single_transformer_blocks]]
    return packed(model) - sum(blocks) + 2 * max(blocks)


def placed_run(model, budget):
    """Latents of one section with `model` placed by the manager on the simulated device, and its placement."""
    manager = ModelManager(SimulatedDevice(), budget_bytes=budget)
    with manager.use(model):
        latents = sample(model, None, sections=1)[0]
        placement = manager.placement(model)
        # Nothing was recast behind the manager's back: every tensor still lies in its packed buffer.
        assert placement.intact()
        plan = placement.plan
    manager.release()
    return latents, plan


def test_the_memory_manager_streams_fp8_bytes_and_keeps_its_packing(plain, fp8):
    expected = sample(fp8, None, sections=1)[0]
    resident, plan = placed_run(fp8, 1 << 30)
    assert not plan.streams and torch.equal(resident, expected)
    streamed, plan = placed_run(fp8, streaming_budget(fp8))
    assert plan.resident == (False,) * 4 and torch.equal(streamed, expected)
    _, plain_plan = placed_run(copy.deepcopy(plain), streaming_budget(plain))
    assert plan.streamed_bytes < 0.5 * plain_plan.streamed_bytes  # float32 -> fp8 in the blocks' linear layers


def test_engine_applies_fp8_and_says_compile_needs_cuda(square_picture, tmp_path):
    models = load_models("tiny")  # a private set: it is converted for good
    req = tiny_request(square_picture, prompt="a kite", steps=2, fp8=True, compile=True)
    events = run_events(req, models, tmp_path / "v.mp4")
    assert isinstance(events[-1], Finished) and is_fp8(models.transformer)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any(n.startswith("FP8 weight storage") for n in notices)
    if not torch.cuda.is_available():
        assert "torch.compile is used on a CUDA GPU only; the transformer runs uncompiled here." in notices
    again = run_events(tiny_request(square_picture, prompt="a kite", steps=2), models, tmp_path / "w.mp4")
    assert any("keeps the FP8 weights" in e.message for e in again if isinstance(e, Notice))


def test_compile_is_a_no_op_on_the_cpu(plain):
    forwards = [b.forward for b in plain.transformer_blocks]
    assert "CUDA" in compile_blocks(plain, True, torch.device("cpu"))
    assert [b.forward for b in plain.transformer_blocks] == forwards
    assert compile_blocks(plain, False, torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_blocks_on_cuda_match_eager(plain):
    model = copy.deepcopy(plain).cuda()
    exact = sample(model, None, sections=1)[0]
    assert compile_blocks(model, True, torch.device("cuda"))
    compiled = sample(model, None, sections=1)[0]
    assert ((compiled - exact).norm() / exact.norm()).item() < 1e-3
    compile_blocks(model, False, torch.device("cuda"))
    assert all("_framepack_eager_forward" not in b.__dict__ for b in model.transformer_blocks)
