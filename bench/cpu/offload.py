"""Block streaming benchmark: exact output, device bytes within the budget, and (on a GPU) speed.

    python bench/cpu/offload.py --simulate --json           # any machine: a small FramePack-class transformer
    python bench/cpu/offload.py --device cuda --full-size   # a GPU: the 13B architecture, random bf16 weights

The last stdout line is JSON. --simulate runs the small model on the simulated device (CPU
tensors, the streaming code paths, a byte ledger) at a third of its bytes and compares with the
same model fully resident. --full-size times one 640-bucket section window with its packed
context for: fully resident (where it fits), our streamer at 6 and 12 GB, and the usual
synchronous baseline (each block copied from pageable memory on the compute stream as it runs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch  # noqa: E402

from bench.support.cuda_timing import SyncPageableBaseline, time_steps  # noqa: E402
from bench.support.synthetic import (FULL_CONFIG, SMALL_CONFIG, full_size_transformer,  # noqa: E402,F401
                                             section_inputs, small_transformer, token_count)
from framepack_core.speed.precision import tensor_bytes  # noqa: E402
from memory import ModelManager, SimulatedDevice, activation_bytes  # noqa: E402
from memory.budget import GiB as GiB_BYTES  # noqa: E402

@torch.no_grad()
def simulate() -> dict:
    model = small_transformer()
    inputs = section_inputs(SMALL_CONFIG, 16, 16)
    resident = model(**inputs)[0]
    model_bytes = tensor_bytes(model)
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=model_bytes // 3, reserve_bytes=0)
    with manager.use(model):
        placement = manager.placement(model)
        first = model(**inputs)[0]
        moved = device.bytes_moved
        second = model(**inputs)[0]  # steady state: the copies ahead of this pass were issued by the last one
        moved = device.bytes_moved - moved
    plan = placement.plan
    return dict(
        device="simulated", model_bytes=model_bytes, budget_bytes=manager.budget_bytes,
        peak_device_bytes=device.peak_bytes, bytes_moved_per_forward=moved,
        blocks_resident=plan.resident.count(True), blocks_total=len(plan.resident), slots=plan.slots,
        max_abs_diff=max((first - resident).abs().max().item(), (second - resident).abs().max().item()))


@torch.no_grad()
def simulate_step_cache(steps: int = 12, threshold: float = 0.15) -> dict:
    """Bytes streamed with TeaCache against without: skipped blocks must cost no copies."""
    from framepack_core.speed.step_cache import step_cache

    model = small_transformer()
    inputs = section_inputs(SMALL_CONFIG, 16, 16)
    budget = tensor_bytes(model) // 3
    results = {}
    for enabled in (False, True):
        device = SimulatedDevice()
        manager = ModelManager(device, budget_bytes=budget, reserve_bytes=0)
        with manager.use(model), step_cache(model, enabled, "teacache", threshold, steps,
                                                  gates=manager.gates) as cache:
            blocks = len(model.transformer_blocks) + len(model.single_transformer_blocks)
            device.reset_counters()
            for step in range(steps):  # a falling timestep, as a sampler gives, over the same latents
                model(**{**inputs, "timestep": torch.tensor([1000.0 * (1 - step / steps)])})
            computed = cache.computed if cache is not None else steps * blocks
            results[enabled] = dict(bytes_moved=device.bytes_moved, blocks_computed=computed)
        manager.release()
    off, on = results[False], results[True]
    return dict(steps=steps, threshold=threshold, bytes_moved_without_cache=off["bytes_moved"],
                bytes_moved_with_cache=on["bytes_moved"], blocks_computed_without_cache=off["blocks_computed"],
                blocks_computed_with_cache=on["blocks_computed"],
                bytes_moved_ratio=on["bytes_moved"] / off["bytes_moved"],
                blocks_computed_ratio=on["blocks_computed"] / off["blocks_computed"])


def _bandwidth(device: str, pinned: bool) -> float:
    """Host->device bytes per second, one 1 GiB copy at a time."""
    host = torch.empty(GiB_BYTES, dtype=torch.uint8, pin_memory=pinned)
    target = torch.empty_like(host, device=device)
    target.copy_(host, non_blocking=pinned)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(3):
        target.copy_(host, non_blocking=pinned)
    torch.cuda.synchronize()
    return 3 * GiB_BYTES / (time.perf_counter() - started)


def _run_baseline(model, inputs, steps: int, device: str) -> dict:
    """Run while the weights are still in plain pageable memory, before the manager packs them."""
    names = ("transformer_blocks", "single_transformer_blocks")
    blocks = [block for name in names for block in getattr(model, name)]
    rest = [m for name, m in model.named_children() if name not in names]
    for module in rest:
        module.to(device)
    torch.cuda.reset_peak_memory_stats()
    baseline = SyncPageableBaseline(blocks, torch.device(device))
    try:
        seconds = time_steps(model, inputs, steps)
    finally:
        baseline.remove()
        for module in rest:
            module.to("cpu")
    return dict(seconds_per_step=seconds, peak_vram_bytes=torch.cuda.max_memory_allocated(),
                bytes_moved_per_step=sum(tensor_bytes(b) for b in blocks),
                copy_bandwidth=_bandwidth(device, pinned=False))


def _run_managed(model, inputs, steps: int, manager: ModelManager, resident_only: bool) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with manager.use(model):
        placement = manager.placement(model)
        plan = placement.plan
        if resident_only and plan.streams:
            manager.release()
            return dict(skipped="the whole model does not fit this GPU")
        model(**inputs)  # after this pass the copies run ahead of compute as they will from now on
        manager.device.reset_counters()
        seconds = time_steps(model, inputs, steps)
        moved = manager.device.bytes_moved / (steps + 1)  # time_steps' own warm-up pass is steady state too
    result = dict(seconds_per_step=seconds, budget_bytes=manager.budget_bytes,
                  peak_vram_bytes=torch.cuda.max_memory_allocated(), bytes_moved_per_step=moved,
                  blocks_resident=plan.resident.count(True), blocks_total=len(plan.resident), slots=plan.slots,
                  pageable_bytes=placement.pageable_bytes)
    manager.release()
    return result


@torch.no_grad()
def full_size(steps: int, budgets_gb: list[float], device: str = "cuda", **model_overrides) -> dict:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("offload.py: --device cuda needs an NVIDIA GPU with CUDA, and none is available here. "
                         "Use --simulate to check the streaming code on the CPU.")
    from memory import cuda_device

    h, w = 640 // 8, 608 // 8  # the 640 bucket (640, 608): latent 80 x 76
    tokens = token_count(h, w)
    reserve = activation_bytes(tokens, FULL_CONFIG["num_attention_heads"] * FULL_CONFIG["attention_head_dim"])
    model = full_size_transformer(**model_overrides)
    inputs = section_inputs(FULL_CONFIG, h, w, dtype=torch.bfloat16, device=device)
    modes = {"sync_pageable": _run_baseline(model, inputs, steps, device)}
    torch.cuda.empty_cache()

    gpu = cuda_device()
    runs = [("resident", None)] + [(f"stream_{gb:g}gb", int(gb * GiB_BYTES)) for gb in budgets_gb]
    for name, budget in runs:
        try:
            manager = ModelManager(gpu, budget_bytes=budget, reserve_bytes=reserve)  # None: all that is free
            modes[name] = _run_managed(model, inputs, steps, manager, resident_only=budget is None)
        except (torch.OutOfMemoryError, ValueError) as error:  # one mode failing still reports the others
            modes[name] = dict(failed=str(error).splitlines()[0])
            gpu.evict_all()

    pinned_bandwidth = _bandwidth(device, pinned=True)
    base = modes["resident"].get("seconds_per_step")
    for name, result in modes.items():
        if name == "resident" or "seconds_per_step" not in result:
            continue
        # Copy time if nothing overlapped; what the step lost against resident is the part not hidden.
        copy_seconds = result["bytes_moved_per_step"] / result.pop("copy_bandwidth", pinned_bandwidth)
        result["copy_seconds_per_step"] = copy_seconds
        if base is not None:
            result["vs_resident"] = result["seconds_per_step"] / base
            if copy_seconds > 0:
                exposed = max(result["seconds_per_step"] - base, 0.0)
                result["copy_hidden_share"] = max(0.0, 1.0 - exposed / copy_seconds)
        if "budget_bytes" in result:
            result["within_budget"] = result["peak_vram_bytes"] <= result["budget_bytes"]
    baseline = modes["sync_pageable"]["seconds_per_step"]
    for name, result in modes.items():
        if name.startswith("stream_") and "seconds_per_step" in result:
            result["speedup_vs_sync"] = baseline / result["seconds_per_step"]
    return dict(device=torch.cuda.get_device_name(), model_bytes=tensor_bytes(model), tokens=tokens,
                activation_reserve_bytes=reserve, steps=steps, pinned_bandwidth=pinned_bandwidth, modes=modes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="small model on the simulated device (no GPU)")
    parser.add_argument("--device", choices=("cuda",), help="time on a real GPU")
    parser.add_argument("--full-size", action="store_true", help="the 13B architecture (with --device cuda)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode, after one warm-up")
    parser.add_argument("--budgets", default="6,12", help="streamer budgets in GB, comma separated")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.simulate:
        result = simulate()
        result["step_cache"] = cache = simulate_step_cache()
        result["bytes_moved_ratio"] = cache["bytes_moved_ratio"]
        result["blocks_computed_ratio"] = cache["blocks_computed_ratio"]
    elif args.device == "cuda" and args.full_size:
        result = full_size(args.steps, [float(b) for b in args.budgets.split(",")])
    else:
        parser.error("choose --simulate, or --device cuda --full-size")
    if not args.json:
        print(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
