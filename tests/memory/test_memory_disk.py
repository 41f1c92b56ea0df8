"""The disk tier: weights left in their mapped safetensors files, streamed through the staging ring."""

import pytest
import torch

from bench.support.synthetic import section_inputs, SMALL_CONFIG, small_transformer
from framepack_core.speed.precision import tensor_bytes
from memory import (
    MappedFile,
    ModelManager,
    SimulatedDevice,
    bind_mapped,
    is_mapped,
    map_folder,
    write_safetensors,
)
from memory.budget import plan_pinning, plan_tiers
from memory.host import anonymous_resident_bytes
from memory.device import ALIGN


def rss_anon() -> int:
    return anonymous_resident_bytes()


def save(model, folder):
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    write_safetensors(folder / "model.safetensors", [(n, t.dtype, tuple(t.shape)) for n, t in state.items()],
                      lambda n: state[n])
    return folder


def mapped_twin(folder, **overrides):
    with torch.device("meta"):
        model = type(small_transformer()).from_config(small_transformer(**overrides).config).eval()
    files, tensors = map_folder(folder)
    assert bind_mapped(model, tensors) == []
    model.mapped_files = files
    return model


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    model = small_transformer(num_single_layers=12)
    folder = save(model, tmp_path_factory.mktemp("weights") / "transformer")
    inputs = section_inputs(SMALL_CONFIG, 8, 8)
    with torch.no_grad():
        expected = model(**inputs)[0]
    return folder, inputs, expected, tensor_bytes(model)


def test_written_file_reads_back_with_safetensors_and_maps_without_copies(tmp_path):
    from safetensors.torch import load_file

    tensors = {"a": torch.randn(3, 5).to(torch.bfloat16), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(4).to(torch.float8_e4m3fn), "d": torch.tensor(True)}
    size = write_safetensors(tmp_path / "x.safetensors", [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()],
                             lambda n: tensors[n], {"k": "v"})
    assert size == (tmp_path / "x.safetensors").stat().st_size
    theirs = load_file(tmp_path / "x.safetensors")  # the reference reader agrees, byte for byte
    mapped = MappedFile(tmp_path / "x.safetensors")
    assert mapped.metadata == {"k": "v"}
    for name, tensor in tensors.items():
        assert torch.equal(theirs[name].view(torch.uint8), tensor.view(torch.uint8))
        assert torch.equal(mapped.tensors[name].view(torch.uint8), tensor.view(torch.uint8))
        assert is_mapped(mapped.tensors[name]) or tensor.numel() == 0
    assert not is_mapped(tensors["a"])


def test_mapping_a_large_file_costs_no_anonymous_memory(tmp_path):
    nbytes = 256 << 20
    write_safetensors(tmp_path / "big.safetensors", [("w", torch.uint8, (nbytes,))],
                      lambda n: torch.full((nbytes,), 7, dtype=torch.uint8))
    before = rss_anon()
    mapped = MappedFile(tmp_path / "big.safetensors")
    assert int(mapped.tensors["w"][::4096].sum()) == 7 * (nbytes // 4096)  # every page touched
    assert rss_anon() - before < 32 << 20  # the pages are the page cache's, not ours


@torch.no_grad()
def test_streamed_from_the_mapped_file_is_bit_identical_and_within_both_budgets(case):
    folder, inputs, expected, model_bytes = case
    model = mapped_twin(folder, num_single_layers=12)
    assert all(is_mapped(p) for p in model.parameters())
    device = SimulatedDevice(staging_bytes=1 << 16)  # small ring: each block takes many windows
    manager = ModelManager(device, budget_bytes=model_bytes // 3, reserve_bytes=0, ram_budget_bytes=0)
    with manager.use(model):
        placement = manager.placement(model)
        assert all(g.packed is None for g in placement.groups)  # nothing copied into the process's memory
        got = [model(**inputs)[0] for _ in range(3)]
        moved = device.bytes_moved
        model(**inputs)
        assert device.bytes_moved - moved == placement.plan.streamed_bytes
        tiers = placement.tier_plan
    assert all(torch.equal(g, expected) for g in got)
    assert tiers.streamed_from_pinned == 0 and tiers.streamed_from_disk == placement.plan.streamed_bytes > 0
    assert device.pinned_bytes == 0  # the RAM budget (0) allows no pinned copies: all from the file
    assert device.peak_bytes <= manager.budget_bytes
    manager.release()
    assert all(is_mapped(p) for p in model.parameters())  # back to the file
    assert torch.equal(model(**inputs)[0], expected)


@torch.no_grad()
def test_the_ram_budget_decides_how_many_mapped_blocks_are_pinned(case):
    folder, inputs, expected, model_bytes = case
    model = mapped_twin(folder, num_single_layers=12)
    device = SimulatedDevice(staging_bytes=1 << 16)
    probe = ModelManager(device, budget_bytes=model_bytes // 3, reserve_bytes=0)
    with probe.use(model):
        placement = probe.placement(model)
        streamed = [placement.block_groups[i].nbytes for i in placement.streamer.order]
    probe.release()
    room = sum(streamed[:3]) + 3 * 2 * ALIGN  # three blocks and their alignment, after the staging ring
    device = SimulatedDevice(staging_bytes=1 << 16)
    manager = ModelManager(device, budget_bytes=model_bytes // 3, reserve_bytes=0,
                           ram_budget_bytes=room + device.staging_bytes)
    with manager.use(model):
        placement = manager.placement(model)
        got = [model(**inputs)[0] for _ in range(3)]
        pinned = [placement.block_groups[i].pinned for i in placement.streamer.order]
        assert manager.host_anon_bytes() <= manager.ram_budget_bytes
    assert pinned == [True] * 3 + [False] * (len(streamed) - 3)
    assert all(torch.equal(g, expected) for g in got)
    manager.release()


def test_pinning_plan_is_a_prefix_and_monotone_in_the_room():
    blocks = [10, 10, 10, 10]
    assert plan_pinning(blocks, [False] * 4, 25) == (True, True, False, False)
    assert plan_pinning(blocks, [False, False, True, False], 15) == (True, False, True, False)  # packed: free
    assert plan_pinning(blocks, [False] * 4, None) == (True,) * 4
    pinned = [sum(b for b, p in zip(blocks, plan_pinning(blocks, [False] * 4, room)) if p) for room in range(0, 60)]
    assert pinned == sorted(pinned)
    tiers = plan_tiers([100] * 6, 50, 50 + 3 * 100 + 100, 150)
    assert tiers.tiers() == ["device", "pinned", "mapped", "mapped", "mapped", "mapped"] or \
        tiers.tiers().count("device") == 1
    assert tiers.streamed_from_pinned == 100 and tiers.streamed_from_disk == 400
