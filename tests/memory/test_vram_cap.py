"""The VRAM budget as a hard cap on the whole process, on a fake CUDA surface (torch.cuda monkeypatched).

The card: an H200's 141 GiB, of which the CUDA context (and nothing else) takes half a GiB.
"""
import types

import pytest
import torch

import framepack_core.engine.memory_plan as memory_plan
from framepack_core.failures import user_message
from framepack_core.engine.memory_plan import LABELS, WORKSPACE_BYTES, make_manager, plan_stages
from framepack_core.request import Request
from memory import BudgetError, GiB, SimulatedDevice, allocator_cap, configure_allocator, model_sizes
from memory.cap import CONTEXT_GROWTH_BYTES

MiB = 1 << 20
TOTAL, CONTEXT = 141 * GiB, 512 * MiB


@pytest.fixture
def card(monkeypatch):
    """torch.cuda as a GPU with TOTAL bytes, CONTEXT of them outside the allocator and `reserved` inside."""
    state = types.SimpleNamespace(reserved=0, fractions=[])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (TOTAL - CONTEXT - state.reserved, TOTAL))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index=None: state.reserved)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, index=None: state.fractions.append((fraction, index)))
    # The manager's device: the simulated one, with the CUDA path's arithmetic around it.
    monkeypatch.setattr(memory_plan, "cuda_device", lambda index=None: SimulatedDevice())
    return state


def test_the_cap_is_the_budget_less_what_lies_outside_the_allocator():
    growth = CONTEXT_GROWTH_BYTES
    assert allocator_cap(TOTAL, TOTAL - CONTEXT, 0, 6 * GiB) == 6 * GiB - CONTEXT - growth
    # What the allocator already holds is inside the cap, not outside it.
    assert allocator_cap(TOTAL, TOTAL - CONTEXT - 2 * GiB, 2 * GiB, 6 * GiB) == 6 * GiB - CONTEXT - growth
    # Another process's 2 GiB count as outside too: the budget is the card's whole use.
    assert allocator_cap(TOTAL, TOTAL - CONTEXT - 2 * GiB, 0, 6 * GiB) == 6 * GiB - CONTEXT - 2 * GiB - growth
    # No budget: what is free when the run starts; a budget above what is free: what is free.
    assert allocator_cap(TOTAL, 20 * GiB, GiB, None) == 21 * GiB - growth
    assert allocator_cap(8 * GiB, 7 * GiB, 0, 100 * GiB) == 7 * GiB - growth
    assert allocator_cap(TOTAL, TOTAL - CONTEXT, 0, CONTEXT) == 0


def test_the_allocator_is_capped_to_the_budget_and_the_manager_places_within(card, picture):
    request = Request.from_fields(image=picture, model="tiny", prompt="a cap", resolution=128)
    models = types.SimpleNamespace(transformer=types.SimpleNamespace(
        config=types.SimpleNamespace(num_attention_heads=2, attention_head_dim=16)))
    manager = make_manager(torch.device("cuda"), 6.0, models, request)
    cap = 6 * GiB - CONTEXT - CONTEXT_GROWTH_BYTES
    [(fraction, index)] = card.fractions
    assert index == 0 and fraction * TOTAL == pytest.approx(cap, abs=1)
    assert manager.budget_bytes == cap - WORKSPACE_BYTES
    card.reserved = 3 * GiB  # a later run, the allocator still holding some: the same cap
    make_manager(torch.device("cuda"), 6.0, models, request)
    assert card.fractions[-1][0] * TOTAL == pytest.approx(cap, abs=1)
    make_manager(torch.device("cuda"), None, models, request)  # no budget: what is free
    assert card.fractions[-1][0] * TOTAL == pytest.approx(TOTAL - CONTEXT - CONTEXT_GROWTH_BYTES, abs=1)


@pytest.fixture(scope="module")
def real_set():
    """The published FramePack models on the meta device: their real sizes, no weights."""
    from framepack_core.models.published import meta_model

    return types.SimpleNamespace(**{key: meta_model(key, "framepack") for key in LABELS})


def request_640(picture):
    return Request.from_fields(image=picture, model="framepack", prompt="a cap", resolution=640)


def test_six_gb_at_640_plans_every_stage_inside_the_budget(card, picture, real_set):
    manager = make_manager(torch.device("cuda"), 6.0, real_set, request_640(picture))
    sizes = {key: model_sizes(getattr(real_set, key)) for key in LABELS}
    stages = plan_stages(sizes, manager.terms)
    assert not stages.short and set(stages.models) == set(LABELS)
    # Every stage (its models' device bytes and the activations kept) inside the allocator's cap, and the cap
    # with the context and its growth inside the 6 GiB.
    cap = card.fractions[-1][0] * TOTAL
    assert stages.peak_vram_bytes <= manager.budget_bytes <= cap
    assert cap + CONTEXT + CONTEXT_GROWTH_BYTES <= 6 * GiB + 1
    assert stages.models["transformer"].device.streams and stages.models["text_encoder"].device.streams


def test_four_gb_at_640_is_refused_up_front_in_one_sentence(card, picture, real_set):
    with pytest.raises(BudgetError) as refused:
        make_manager(torch.device("cuda"), 4.0, real_set, request_640(picture))
    message = user_message(refused.value)
    print(message)
    assert message == str(refused.value) and "\n" not in message and message.count(". ") == 0
    assert message.startswith("A VRAM budget of 4.00 GiB cannot run the text encoder (Llama)")
    assert message.endswith("raise the VRAM budget to at least 5.5 GiB, or lower the resolution.")
    make_manager(torch.device("cuda"), 4.0, real_set, Request.from_fields(  # a smaller picture fits 4 GiB
        image=picture, model="framepack", prompt="a cap", resolution=384))


def test_a_simulated_device_is_refused_the_same_way(tiny_models, picture):
    request = Request.from_fields(image=picture, model="tiny", prompt="a cap", resolution=128)
    with pytest.raises(BudgetError, match=r"raise the VRAM budget to at least .* GiB, or lower the resolution\.$"):
        make_manager(SimulatedDevice(), 0.001, tiny_models, request)


def test_an_out_of_memory_error_is_one_sentence():
    message = user_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                                   "total capacity of 139.81 GiB of which ...\nTraceback"))
    assert message.startswith("The GPU ran out of memory within the run's VRAM budget")
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")


def test_expandable_segments_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    env = {}
    assert configure_allocator(env) == "expandable_segments:True" and env == {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    assert configure_allocator(mine) is None and mine == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    switched_off = {"FRAMEPACK_EXPANDABLE_SEGMENTS": "0"}
    assert configure_allocator(switched_off) is None and "PYTORCH_CUDA_ALLOC_CONF" not in switched_off
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert configure_allocator({}) is None  # too late to matter: left alone
