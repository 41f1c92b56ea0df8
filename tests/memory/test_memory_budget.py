"""The budget planner: pure arithmetic over block sizes, checked as properties."""
import pytest
from hypothesis import given, settings, strategies as st

from memory.budget import BudgetError, GiB, activation_bytes, plan_blocks, residency_order, spread_order

blocks_st = st.lists(st.integers(0, 1000), min_size=0, max_size=24)
other_st = st.integers(0, 2000)
budget_st = st.integers(0, 30000)
prefetch_st = st.integers(0, 3)


def plan_or_none(blocks, other, budget, reserve=0, prefetch=2):
    try:
        return plan_blocks(blocks, other, budget, reserve, prefetch)
    except BudgetError:
        return None


@settings(max_examples=300, deadline=None)
@given(blocks_st, other_st, budget_st, st.integers(0, 3000), prefetch_st)
def test_never_over_budget(blocks, other, budget, reserve, prefetch):
    plan = plan_or_none(blocks, other, budget, reserve, prefetch)
    if plan is None:  # refused only when not even the fixed part and one block fit
        assert other + max(blocks, default=0) > budget - reserve
        return
    assert plan.device_bytes <= budget - reserve
    assert plan.streamed_bytes + plan.resident_bytes == sum(blocks)
    if plan.streams:
        assert 1 <= plan.slots <= prefetch + 1
        assert plan.slot_bytes == max(blocks)
        assert plan.prefetch == plan.slots - 1


@settings(max_examples=300, deadline=None)
@given(blocks_st, other_st, budget_st, st.integers(0, 5000), prefetch_st)
def test_monotone_in_budget(blocks, other, budget, extra, prefetch):
    small = plan_or_none(blocks, other, budget, prefetch=prefetch)
    large = plan_or_none(blocks, other, budget + extra, prefetch=prefetch)
    if small is None:
        return
    assert large is not None
    assert large.streamed_bytes <= small.streamed_bytes
    # Residents only ever join: a larger budget keeps every block a smaller one kept.
    assert all(big or not little for little, big in zip(small.resident, large.resident))


@settings(max_examples=200, deadline=None)
@given(blocks_st, other_st, st.integers(0, 3000), st.integers(0, 100))
def test_everything_resident_when_it_fits(blocks, other, reserve, slack):
    plan = plan_blocks(blocks, other, other + sum(blocks) + reserve + slack, reserve)
    assert all(plan.resident) and plan.slots == 0 and plan.streamed_bytes == 0


@given(st.integers(0, 200))
def test_orders_are_permutations(count):
    assert sorted(spread_order(count)) == list(range(count))


def test_spread_order_spreads_its_prefixes():
    assert spread_order(8) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert spread_order(6)[:3] == [0, 4, 2]


def test_larger_blocks_earn_residency_first():
    sizes = [5, 5, 5, 5, 2, 2, 2, 2, 2, 2]
    order = residency_order(sizes)
    assert sorted(order) == list(range(10))
    assert set(order[:4]) == {0, 1, 2, 3}


def test_budget_below_the_fixed_part_is_refused_with_a_message():
    with pytest.raises(BudgetError, match="VRAM budget"):
        plan_blocks([100] * 10, other_bytes=500, budget_bytes=550)
    assert issubclass(BudgetError, ValueError)  # the app shows it to the user as it is


def test_few_slots_stream_everything_until_prefetch_fits():
    plan = plan_blocks([100] * 10, other_bytes=50, budget_bytes=50 + 250, prefetch=2)
    assert plan.slots == 2 and not any(plan.resident)
    plan = plan_blocks([100] * 10, other_bytes=50, budget_bytes=50 + 550, prefetch=2)
    assert plan.slots == 3 and sum(plan.resident) == 2


def test_full_size_transformer_at_6_and_12_gb():
    """The 13B FramePack transformer's shape: 20 blocks of ~680 MB, 40 of ~280 MB, ~0.66 GB fixed."""
    double, single, other = 679_600_000, 282_200_000, 660_000_000
    sizes = [double] * 20 + [single] * 40
    reserve = activation_bytes(18_900, 3072)
    six = plan_blocks(sizes, other, 6 * GiB, reserve)
    twelve = plan_blocks(sizes, other, 12 * GiB, reserve)
    assert six.device_bytes <= 6 * GiB - reserve and six.slots == 3
    assert twelve.device_bytes <= 12 * GiB - reserve
    assert twelve.streamed_bytes < six.streamed_bytes
    assert sum(twelve.resident[:20]) >= 8  # the double-stream blocks earn residency first
