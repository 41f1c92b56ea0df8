"""One GPU, one command, under 8 minutes: the memory manager's figures at FramePack's full size.

    python bench/gpu/gpu_report.py --json

Needs only torch, transformers, accelerate, safetensors and diffusers, and a CUDA GPU; without
one it exits at once. Full-size random bf16 weights (the 13B architecture, bench/cpu/offload.py), one
640-bucket section call with its packed context, per mode: seconds per step and peak VRAM.

- resident: the whole transformer on the GPU (where it fits)
- stream_{6,12}gb_pinned: our streamer at a 6 / 12 GiB budget, host copies in pinned memory
- stream_{6,12}gb_mapped: the same, weights memory-mapped from a safetensors file (RAM budget 0:
  nothing pinned, every block through the staging ring), the disk tier with the page cache warm
- sync_pageable: the published app's way (each block moved synchronously from pageable memory
  as it runs: DynamicSwapInstaller-style), the baseline
- diffusers_group_offload: diffusers' apply_group_offloading(block_level, 1 block, use_stream=True)
- fp8_stream_6gb_pinned: FP8 weight storage, streamed at 6 GiB
- vae_decode_640: peak VRAM of decoding one section (10 latent frames, 37 pixel frames) at 640,
  with and without tiling

The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch  # noqa: E402

GiB = 1 << 30


def _fail_without_cuda() -> None:
    if not torch.cuda.is_available():
        print("gpu_report.py: this benchmark needs an NVIDIA GPU with CUDA, and none is available here. "
              "Run bench/cpu/offload.py --simulate and bench/cpu/host_memory.py on machines without one.", file=sys.stderr)
        raise SystemExit(2)


def _peak_reset() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _timed(model, inputs, steps: int) -> float:
    from bench.support.cuda_timing import time_steps

    return time_steps(model, inputs, steps)


def _managed(model, inputs, steps, budget_gb, ram_budget_bytes, reserve) -> dict:
    from memory import ModelManager, cuda_device

    gpu = cuda_device()
    _peak_reset()
    manager = ModelManager(gpu, budget_bytes=int(budget_gb * GiB), reserve_bytes=reserve,
                           ram_budget_bytes=ram_budget_bytes)
    try:
        with manager.use(model):
            model(**inputs)
            model(**inputs)  # two passes: the streamed blocks are pinned now, where the RAM budget allows
            gpu.reset_counters()
            seconds = _timed(model, inputs, steps)
            moved = gpu.bytes_moved / (steps + 1)
            tiers = manager.placement(model).tier_plan
        return dict(seconds_per_step=seconds, peak_vram_bytes=torch.cuda.max_memory_allocated(),
                    budget_bytes=int(budget_gb * GiB), bytes_moved_per_step=moved,
                    streamed_from_pinned=tiers.streamed_from_pinned, streamed_from_disk=tiers.streamed_from_disk,
                    blocks_resident=tiers.device.resident.count(True))
    finally:
        manager.release()


def _try(name: str, modes: dict, run) -> None:
    started = time.perf_counter()
    try:
        modes[name] = run()
    except (torch.OutOfMemoryError, RuntimeError, ValueError) as error:
        modes[name] = dict(failed=str(error).splitlines()[0][:300])
        _peak_reset()
    modes[name]["wall_seconds"] = time.perf_counter() - started
    print(f"{name}: {json.dumps(modes[name])}", file=sys.stderr, flush=True)


def _vae_decode(tiled: bool) -> dict:
    from diffusers import AutoencoderKLHunyuanVideo

    _peak_reset()
    vae = AutoencoderKLHunyuanVideo().to("cuda", torch.float16).eval()  # HunyuanVideo's VAE config (defaults)
    if tiled:
        vae.enable_tiling()
    latents = torch.randn(1, 16, 10, 80, 76, device="cuda", dtype=torch.float16)  # 640 bucket, one section
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with torch.no_grad():
        frames = vae.decode(latents).sample
    torch.cuda.synchronize()
    result = dict(seconds=time.perf_counter() - started, peak_vram_bytes=torch.cuda.max_memory_allocated(),
                  frames=frames.shape[2])
    del vae, frames
    return result


_NEEDS_MAPPED_COPY = frozenset({"stream_6gb_mapped", "stream_12gb_mapped", "diffusers_group_offload"})


def _mapped_modes(model, inputs, steps: int, reserve: int, folder: Path, attempt) -> None:
    """The modes that read the weights from a file: the same weights in a safetensors file, mapped (no
    copy into the process)."""
    from memory import bind_mapped, map_folder, write_safetensors

    path = folder / "transformer" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    write_safetensors(path, [(n, t.dtype, tuple(t.shape)) for n, t in state.items()], lambda n: state[n])
    del state
    with torch.device("meta"):
        mapped = type(model).from_config(model.config).to(torch.bfloat16).eval()
    files, tensors = map_folder(path.parent)
    bind_mapped(mapped, tensors)
    mapped.mapped_files = files
    for gb in (6, 12):
        attempt(f"stream_{gb}gb_mapped", lambda gb=gb: _managed(mapped, inputs, steps, gb, 0, reserve))

    def diffusers_group_offload():
        from diffusers.hooks import apply_group_offloading

        _peak_reset()
        apply_group_offloading(mapped, onload_device=torch.device("cuda"), offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        return dict(seconds_per_step=_timed(mapped, inputs, steps), peak_vram_bytes=torch.cuda.max_memory_allocated())

    attempt("diffusers_group_offload", diffusers_group_offload)
    del mapped, files, tensors
    path.unlink(missing_ok=True)
    gc.collect()


@torch.no_grad()
def report(steps: int, folder: Path, skip: frozenset[str] = frozenset()) -> dict:
    from bench.support.cuda_timing import SyncPageableBaseline
    from bench.support.synthetic import FULL_CONFIG, full_size_transformer, section_inputs, token_count
    from framepack_core.speed.precision import store_fp8, tensor_bytes
    from memory import activation_bytes

    h, w = 640 // 8, 608 // 8
    tokens = token_count(h, w)
    reserve = activation_bytes(tokens, FULL_CONFIG["num_attention_heads"] * FULL_CONFIG["attention_head_dim"])
    inputs = section_inputs(FULL_CONFIG, h, w, dtype=torch.bfloat16, device="cuda")
    model = full_size_transformer()
    modes: dict[str, dict] = {}

    def attempt(name: str, run) -> None:
        if name not in skip:
            _try(name, modes, run)
            # What is done so far, as a JSON line of its own: a run cut short keeps its finished modes.
            print(json.dumps(dict(partial=True, modes=modes)), flush=True)

    def resident():
        _peak_reset()
        model.to("cuda")
        try:
            return dict(seconds_per_step=_timed(model, inputs, steps), peak_vram_bytes=torch.cuda.max_memory_allocated())
        finally:
            model.to("cpu")

    def sync_pageable():
        names = ("transformer_blocks", "single_transformer_blocks")
        blocks = [b for n in names for b in getattr(model, n)]
        rest = [m for n, m in model.named_children() if n not in names]
        for module in rest:
            module.to("cuda")
        _peak_reset()
        baseline = SyncPageableBaseline(blocks, torch.device("cuda"))
        try:
            return dict(seconds_per_step=_timed(model, inputs, steps), peak_vram_bytes=torch.cuda.max_memory_allocated())
        finally:
            baseline.remove()
            for module in rest:
                module.to("cpu")

    attempt("resident", resident)
    attempt("sync_pageable", sync_pageable)  # before our manager packs the weights: plain pageable tensors

    if not skip >= _NEEDS_MAPPED_COPY:
        _mapped_modes(model, inputs, steps, reserve, folder, attempt)
    for gb in (6, 12):
        attempt(f"stream_{gb}gb_pinned", lambda gb=gb: _managed(model, inputs, steps, gb, None, reserve))

    def fp8():
        store_fp8(model)
        return _managed(model, inputs, steps, 6, None, reserve)

    attempt("fp8_stream_6gb_pinned", fp8)
    fp8_bytes = tensor_bytes(model)
    del model
    attempt("vae_decode_640_untiled", lambda: _vae_decode(False))
    attempt("vae_decode_640_tiled", lambda: _vae_decode(True))

    base = modes.get("sync_pageable", {}).get("seconds_per_step")
    for result in modes.values():
        if base and "seconds_per_step" in result:
            result["speedup_vs_sync"] = base / result["seconds_per_step"]
        if "budget_bytes" in result:
            result["within_budget"] = result["peak_vram_bytes"] <= result["budget_bytes"]
    return dict(device=torch.cuda.get_device_name(), tokens=tokens, steps=steps, activation_reserve_bytes=reserve,
                fp8_model_bytes=fp8_bytes, modes=modes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode, after the warm-up")
    parser.add_argument("--dir", default=None, help="where the mapped copy goes (default /dev/shm, else the temp folder)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--skip", default="", metavar="MODE,...",
                        help="modes to leave out (names as in the JSON), for a shorter run")
    args = parser.parse_args(argv)
    _fail_without_cuda()
    default = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="gpu-report-", dir=args.dir or default) as folder:
        started = time.perf_counter()
        result = report(args.steps, Path(folder), frozenset(filter(None, args.skip.split(","))))
        result["wall_seconds"] = time.perf_counter() - started
    if not args.json:
        print(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
