"""FP8 weight storage: host bytes, and bytes streamed to the GPU per step, against the model's own dtype.

    python bench/cpu/precision.py --json            # any machine: the tiny set measured, the 13B config counted
    python bench/cpu/precision.py --json --cuda     # a GPU too: one 640-bucket step of the 13B architecture
                                                #   (random weights), bf16 vs FP8, resident and at 6 GB

- tiny: the tiny set's transformer (float32) before and after `store_fp8`, each run once through
  the memory manager on the simulated device with just room for its fixed part and three
  streaming slots, so every block streams; bytes moved are read from the device's ledger.
- full_size: the FramePack 13B config built on the meta device (no memory, no weights), in bf16,
  in our FP8 and, for comparison, with diffusers' own layer selection (enable_layerwise_casting,
  which keeps the modulation projections in bf16); bytes per block and the memory manager's plan
  at each --budgets (GB), with the activation reserve of a 640-bucket step: what stays resident
  and what streams per step.
- cuda (with --cuda): seconds per transformer step, bytes moved, peak VRAM and the attention
  kernel in use, for bf16 and FP8, fully resident and at the first budget.

The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch  # noqa: E402

from bench.support.cuda_timing import time_steps  # noqa: E402
from bench.support.synthetic import FULL_CONFIG, full_size_transformer, section_inputs, token_count  # noqa: E402
from framepack_core.speed.precision import store_fp8, tensor_bytes  # noqa: E402
from framepack_core.speed.prepare import transformer_blocks  # noqa: E402
from memory import GiB, ModelManager, SimulatedDevice, activation_bytes, plan_blocks  # noqa: E402
from memory.device import align  # noqa: E402

LATENT = (640 // 8, 608 // 8)  # the 640 bucket (640 x 608 pixels)


def layout(model) -> tuple[list[int], int]:
    blocks = [tensor_bytes(b) for b in transformer_blocks(model)]
    return blocks, tensor_bytes(model) - sum(blocks)


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(((a.float() - b.float()).norm() / b.float().norm()).item(), 5)


@torch.no_grad()
def tiny() -> dict:
    from framepack_core.models.loading import load_models

    model = load_models("tiny").transformer
    inputs = section_inputs(dict(model.config), 8, 8)
    result, outputs = {}, {}
    for name in ("float32", "fp8"):
        if name == "fp8":
            store_fp8(model)
        blocks, rest = layout(model)
        device = SimulatedDevice()
        # Room for the fixed part and two slots, as the manager packs them (each tensor aligned):
        # fewer slots than it would like, so every block streams.
        packed = [sum(align(t.nbytes) for t in [*b.parameters(), *b.buffers()]) for b in transformer_blocks(model)]
        fixed = sum(align(t.nbytes) for t in [*model.parameters(), *model.buffers()]) - sum(packed)
        manager = ModelManager(device, budget_bytes=fixed + 2 * max(packed), reserve_bytes=0)
        with manager.use(model):
            model(**inputs)  # first pass: after it the copies run ahead as they will from now on
            device.reset_counters()
            outputs[name] = model(**inputs)[0]
            plan = manager.placement(model).plan
            result[name] = dict(host_bytes=tensor_bytes(model), block_bytes=sum(blocks), fixed_bytes=rest,
                                bytes_streamed_per_step=device.bytes_moved,
                                blocks_streamed=plan.resident.count(False), blocks=len(blocks))
        manager.release()
    result["host_ratio"] = round(result["fp8"]["host_bytes"] / result["float32"]["host_bytes"], 4)
    result["streamed_ratio"] = round(result["fp8"]["bytes_streamed_per_step"] /
                                     result["float32"]["bytes_streamed_per_step"], 4)
    result["output_distance"] = relative_distance(outputs["fp8"], outputs["float32"])
    return result


def full_size_model_on_meta():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            return HunyuanVideoFramepackTransformer3DModel(**FULL_CONFIG)
    finally:
        torch.set_default_dtype(default)


def full_size(budgets_gb: list[float]) -> dict:
    reserve = activation_bytes(token_count(*LATENT), FULL_CONFIG["num_attention_heads"] *
                               FULL_CONFIG["attention_head_dim"])
    result = dict(activation_reserve_bytes=reserve)
    for name in ("bfloat16", "fp8", "fp8_diffusers_selection"):
        model = full_size_model_on_meta()
        if name == "fp8":
            store_fp8(model, compute_dtype=torch.bfloat16)
        elif name == "fp8_diffusers_selection":
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        blocks, rest = layout(model)
        plans = {}
        for gb in budgets_gb:
            plan = plan_blocks(blocks, rest, int(gb * GiB), reserve)
            plans[f"{gb:g}gb"] = dict(bytes_streamed_per_step=plan.streamed_bytes,
                                      blocks_resident=plan.resident.count(True), blocks=len(blocks))
        result[name] = dict(host_bytes=tensor_bytes(model), block_bytes=sum(blocks), fixed_bytes=rest, plans=plans)
    first = f"{budgets_gb[0]:g}gb"
    for name in ("fp8", "fp8_diffusers_selection"):
        result[name]["host_ratio"] = round(result[name]["host_bytes"] / result["bfloat16"]["host_bytes"], 4)
        result[name][f"streamed_ratio_{first}"] = round(
            result[name]["plans"][first]["bytes_streamed_per_step"] /
            result["bfloat16"]["plans"][first]["bytes_streamed_per_step"], 4)
    return result


@torch.no_grad()
def cuda(budget_gb: float, steps: int) -> dict:
    from framepack_core.speed.attention import apply_attention
    from memory import cuda_device

    model = full_size_transformer()
    inputs = section_inputs(FULL_CONFIG, *LATENT, dtype=torch.bfloat16, device="cuda")
    reserve = activation_bytes(token_count(*LATENT), FULL_CONFIG["num_attention_heads"] *
                               FULL_CONFIG["attention_head_dim"])
    result = dict(device=torch.cuda.get_device_name(), attention=apply_attention(model, "auto", "cuda").line())
    outputs = {}
    gpu = cuda_device()
    for name in ("bfloat16", "fp8"):
        if name == "fp8":
            store_fp8(model, compute_dtype=torch.bfloat16)
        result[name] = {}
        for mode, budget in (("resident", None), (f"stream_{budget_gb:g}gb", int(budget_gb * GiB))):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                manager = ModelManager(gpu, budget_bytes=budget, reserve_bytes=reserve)
                with manager.use(model):
                    if budget is None and manager.placement(model).plan.streams:
                        result[name][mode] = dict(skipped="the whole model does not fit this GPU")
                        continue
                    out = model(**inputs)[0]  # warm-up; its output is the one compared
                    outputs.setdefault(name, out.float().cpu())
                    gpu.reset_counters()
                    seconds = time_steps(model, inputs, steps)
                    result[name][mode] = dict(seconds_per_step=round(seconds, 4),
                                              # time_steps runs one more (warm) pass than it times
                                              bytes_streamed_per_step=gpu.bytes_moved // (steps + 1),
                                              peak_vram_bytes=torch.cuda.max_memory_allocated())
            except (torch.OutOfMemoryError, ValueError) as error:  # one mode failing still reports the others
                result[name][mode] = dict(failed=str(error).splitlines()[0])
            finally:
                gpu.evict_all()
    if len(outputs) == 2:
        result["output_distance_random_weights"] = relative_distance(outputs["fp8"], outputs["bfloat16"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="6,12", help="device budgets in GB for the full-size plan")
    parser.add_argument("--cuda", action="store_true", help="also time the 13B architecture on this GPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode with --cuda")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    result = dict(tiny=tiny(), full_size=full_size(budgets))
    if args.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("precision.py: --cuda needs an NVIDIA GPU with CUDA, and none is available here.")
        result["cuda"] = cuda(budgets[0], args.steps)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
