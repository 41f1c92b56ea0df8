"""Attention kernel x FP8 arithmetic x compile, side by side: speed and what each costs in quality.

    python bench/gpu/kernels.py --json            # a CUDA GPU: full size, 640 bucket, streamed at 6 GiB
    python bench/gpu/kernels.py --tiny --json     # any machine: a small transformer at 128, two steps
    python bench/gpu/kernels.py --layers 1 --resolution 128 --steps 2 --json   # any machine: full width, 1+1 blocks

One section (the app's section loop, `run_sections`: the same inputs, seed and steps for every
combination) with random weights (bench/support/synthetic.py: the 13B architecture, or the small one
with --tiny), per combination: SDPA bf16 (the reference), SageAttention, FP8 storage (today's
`--fp8`, for scale), FP8 arithmetic (`--fp8 fast`) and Sage + FP8 fast, each with and without
`--compile`. Each is set up by the app's own `prepare_transformer`, so what cannot run on this
machine is reported as skipped with the app's reason. Per combination: seconds per step after the
first, the first step (compile's cost), peak VRAM, and against the reference: the relative error
of the final latents and the PSNR of the decoded frames (8-bit, as the MP4 gets them).

Random weights: the VAE is random too (the published configuration, seeded), so the PSNR says how
far a kernel moves the pixels through a decoder of the real shape, not how a real video looks.
With torchao installed, `torchao` compares its float8 inference config with ours on a few
full-width blocks held on the GPU (it cannot be streamed: see speed/fp8_matmul.py).

Without CUDA (and without --tiny) it says so and does nothing. The last stdout line is JSON.
On an H200 the default run should take about 3 minutes (estimated: building and pinning the 13B
weights, nine sections of 3 steps, four cold regional compiles, nine decodes); `--no-compile`
leaves out the four compiled ones, `--only NAME ...` runs a few (and `sdpa`, the reference, always).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch  # noqa: E402

GiB = 1 << 30
# (name, attention, fp8, compile). bf16 first: FP8 storage converts the weights for good.
COMBINATIONS = (
    ("sdpa", "sdpa", "off", False),  # the reference
    ("sdpa+compile", "sdpa", "off", True),
    ("sage", "sage", "off", False),
    ("sage+compile", "sage", "off", True),
    ("fp8storage", "sdpa", "storage", False),
    ("fp8fast", "sdpa", "fast", False),
    ("fp8fast+compile", "sdpa", "fast", True),
    ("sage+fp8fast", "sage", "fast", False),
    ("sage+fp8fast+compile", "sage", "fast", True),
)


@dataclass
class Setup:
    transformer: torch.nn.Module
    manager: object
    conditioning: object
    start_latent: torch.Tensor
    settings: object
    device: torch.device


def build(tiny: bool, layers: int | None, resolution: int, steps: int, budget_gb: float) -> Setup:
    from framepack_core.method.buckets import nearest_bucket
    from framepack_core.method.sections import Conditioning, SectionSettings
    from bench.support.synthetic import (FULL_CONFIG, REAL_PROMPT_TOKENS, SIGLIP_TOKENS, SMALL_CONFIG,
                                                 full_size_transformer, small_transformer, token_count)
    from memory import ModelManager, activation_bytes, cuda_device

    config = dict(SMALL_CONFIG if tiny else FULL_CONFIG)
    if layers is not None:
        config.update(num_layers=layers, num_single_layers=layers)
    overrides = {k: config[k] for k in ("num_layers", "num_single_layers")}
    transformer = small_transformer(**overrides).to(torch.bfloat16) if tiny else full_size_transformer(**overrides)
    # A 640 x 608 picture's bucket at 640: latents 80 x 76, 18,293 tokens a call (bench/gpu/gpu_report.py's).
    height, width = nearest_bucket(640, 608, resolution)
    h, w = height // 8, width // 8
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[:, :REAL_PROMPT_TOKENS] = True
    image_tokens = SIGLIP_TOKENS if config["image_proj_dim"] == 1152 else 16
    conditioning = Conditioning(torch.randn(1, 512, config["text_embed_dim"], generator=g), mask,
                                torch.randn(1, config["pooled_projection_dim"], generator=g),
                                torch.randn(1, image_tokens, config["image_proj_dim"], generator=g))
    start_latent = torch.randn(1, 16, 1, h, w, generator=g)
    settings = SectionSettings(seconds=1.0, window=9, steps=steps)  # one section
    if torch.cuda.is_available():
        width_ = config["num_attention_heads"] * config["attention_head_dim"]
        reserve = activation_bytes(token_count(h, w, image_tokens=image_tokens), width_)
        manager = ModelManager(cuda_device(), budget_bytes=int(budget_gb * GiB), reserve_bytes=reserve)
        device = torch.device("cuda")
    else:
        manager, device = ModelManager("cpu"), torch.device("cpu")
    return Setup(transformer, manager, conditioning, start_latent, settings, device)


def skip_reason(prepared, attention: str, fp8: str, compile_: bool, transformer) -> str | None:
    """Why the app would not run this combination here (its own notices), or None."""
    from framepack_core.speed.prepare import is_compiled

    reasons = []
    if prepared.attention.backend != attention:
        reasons.append(f"{attention}: {prepared.attention.passed_over.get(attention, 'not chosen')}")
    if prepared.fp8 != fp8:
        reasons += [n for n in prepared.notices if n.startswith("FP8 arithmetic")] or [f"FP8 {fp8} did not run"]
    if compile_ and not is_compiled(transformer):
        reasons += [n for n in prepared.notices if "torch.compile" in n] or ["compile did not run"]
    return "; ".join(reasons) or None


def run_section(setup: Setup) -> tuple[torch.Tensor, list[float]]:
    """The section's video latents and the seconds of each step."""
    from framepack_core.method.sections import run_sections

    marks = [time.perf_counter()]

    def on_step(*_):
        if setup.device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    generator = torch.Generator("cpu").manual_seed(31337)
    with setup.manager.use(setup.transformer):
        (section,) = list(run_sections(setup.transformer, setup.conditioning, setup.start_latent, setup.settings,
                                       generator, step_callback=on_step))
    return section.video_latents, [b - a for a, b in zip(marks, marks[1:])]


def combination(setup: Setup, attention: str, fp8: str, compile_: bool) -> tuple[dict, torch.Tensor | None]:
    from framepack_core.request import SpeedSettings
    from framepack_core.speed.prepare import prepare_transformer

    torch._dynamo.reset()  # each combination compiles afresh (and stays under dynamo's recompile limit)
    # The request's own speed settings (a copy here went stale when the settings were renamed).
    speed = SpeedSettings(attention_requested=attention, fp8=fp8, compile=compile_)
    prepared = prepare_transformer(setup.transformer, speed, setup.manager)
    reason = skip_reason(prepared, attention, fp8, compile_, setup.transformer)
    if reason:
        return dict(skipped=reason), None
    if setup.device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    latents, seconds = run_section(setup)
    later = seconds[1:] or seconds
    result = dict(seconds_per_step=sum(later) / len(later), first_step_seconds=seconds[0],
                  fp8_granularity=_granularity(setup.transformer) if fp8 == "fast" else None)
    if setup.device.type == "cuda":
        result["peak_vram_bytes"] = torch.cuda.max_memory_allocated()
        result["within_budget"] = result["peak_vram_bytes"] <= setup.manager.budget_bytes
    return result, latents


def _granularity(transformer) -> str | None:
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(_LAYERWISE_CASTING_HOOK) if registry is not None else None
        if hook is not None:
            return getattr(hook, "granularity", None)
    return None


def psnr(frames: torch.Tensor, reference: torch.Tensor) -> float | None:
    """Peak signal-to-noise ratio of 8-bit frames in dB; None for identical frames (infinite)."""
    mse = ((frames.double() - reference.double()) ** 2).mean().item()
    return None if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@torch.no_grad()
def decode_all(latents: dict[str, torch.Tensor], tiny: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """Each combination's section decoded to 8-bit frames, with one random VAE of the real shape on a
    GPU, else the tiny set's (the real one takes minutes a section on a CPU)."""
    from diffusers import AutoencoderKLHunyuanVideo

    from framepack_core.media.video import decode_latents, to_uint8_frames
    from framepack_core.models import tiny as tiny_set
    from framepack_core.models.published import published

    torch.manual_seed(0)
    vae = tiny_set._vae() if tiny or device.type != "cuda" else AutoencoderKLHunyuanVideo(**published("vae").config)
    vae = vae.to(device, torch.float16 if device.type == "cuda" else torch.float32).eval()
    frames = {name: torch.from_numpy(to_uint8_frames(decode_latents(vae, x))) for name, x in latents.items()}
    del vae
    return frames


def compare(results: dict, latents: dict, frames: dict) -> None:
    reference, ref_frames = latents["sdpa"], frames["sdpa"]
    clipped = ((ref_frames == 0) | (ref_frames == 255)).double().mean().item()
    results["sdpa"]["reference_frames_clipped_share"] = clipped  # how much of the decoder's output is saturated
    for name, x in latents.items():
        results[name]["latent_relative_error"] = ((x - reference).norm() / reference.norm()).item()
        results[name]["psnr_db"] = psnr(frames[name], ref_frames)
        base = results["sdpa"]["seconds_per_step"]
        results[name]["speedup_vs_sdpa"] = base / results[name]["seconds_per_step"]


def torchao_versus_scaled_mm(blocks: int = 2, tokens: int = 18293) -> dict:
    """torchao's float8 inference config (row-wise) against ours on `blocks` full-width MLPs (a single
    block's proj_mlp and proj_out shapes) resident on the GPU: seconds a pass, error against bf16."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as error:
        return dict(skipped=f"torchao is not installed ({error})")
    from framepack_core.speed.fp8_matmul import unsupported
    from framepack_core.speed.precision import store_layer_fp8

    reason = unsupported(torch.device("cuda"))
    if reason:
        return dict(skipped=reason)
    width, hidden = 3072, 12288
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(*[m for _ in range(blocks) for m in (
        torch.nn.Linear(width, hidden), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(hidden, width))])
    mlp = mlp.to("cuda", torch.bfloat16).eval()
    x = torch.randn(1, tokens, width, device="cuda", dtype=torch.bfloat16)
    variants = {"bf16": mlp, "torchao": copy.deepcopy(mlp), "scaled_mm": copy.deepcopy(mlp)}
    quantize_(variants["torchao"], Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    for layer in variants["scaled_mm"]:
        if isinstance(layer, torch.nn.Linear):
            store_layer_fp8(layer, torch.bfloat16).granularity = "row"
    result, outputs = {}, {}
    with torch.no_grad():
        for name, model in variants.items():
            outputs[name] = model(x).float()
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(5):
                model(x)
            torch.cuda.synchronize()
            result[f"{name}_seconds"] = (time.perf_counter() - started) / 5
    for name in ("torchao", "scaled_mm"):
        result[f"{name}_relative_error"] = ((outputs[name] - outputs["bf16"]).norm() / outputs["bf16"].norm()).item()
    return result


def fastest_within(results: dict, psnr_db: float = 30.0) -> dict | None:
    """The fastest combination whose frames stay within `psnr_db` of the reference's."""
    fit = [(r["seconds_per_step"], name) for name, r in results.items()
           if "psnr_db" in r and (r["psnr_db"] is None or r["psnr_db"] >= psnr_db)]
    if not fit:
        return None
    seconds, name = min(fit)
    return dict(name=name, seconds_per_step=seconds, psnr_db=results[name]["psnr_db"],
                speedup_vs_sdpa=results[name]["speedup_vs_sdpa"])


def report(args) -> dict:
    setup = build(args.tiny, args.layers, args.resolution, args.steps, args.vram_budget)
    only = set(args.only or [c[0] for c in COMBINATIONS]) | {"sdpa"}  # the reference always runs
    wanted = [c for c in COMBINATIONS if c[0] in only and not (args.no_compile and c[3])]
    results, latents = {}, {}
    for name, attention, fp8, compile_ in wanted:
        started = time.perf_counter()
        try:
            results[name], x = combination(setup, attention, fp8, compile_)
        except Exception as error:  # one combination failing (a kernel, the compiler, memory) still reports the rest
            results[name], x = dict(failed=f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"), None
        results[name]["wall_seconds"] = time.perf_counter() - started
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
        # What is done so far, as a JSON line of its own: a step cut short keeps every finished combination.
        print(json.dumps(dict(partial=True, combinations=results)), flush=True)
        if x is not None:
            latents[name] = x
    setup.manager.release()
    device, tiny = setup.device, args.tiny
    del setup
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "sdpa" in latents:
        started = time.perf_counter()
        compare(results, latents, decode_all(latents, tiny, device))
        print(f"decoded {len(latents)} sections in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    out = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", tiny=tiny,
               vae="published" if device.type == "cuda" and not tiny else "tiny",
               resolution=args.resolution, steps=args.steps, layers=args.layers,
               vram_budget_gb=args.vram_budget if device.type == "cuda" else None, combinations=results,
               fastest_within_30db=fastest_within(results))
    if device.type == "cuda" and not tiny and not args.no_torchao:
        out["torchao"] = torchao_versus_scaled_mm()
        print(f"torchao: {json.dumps(out['torchao'])}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="the small transformer, one block of each kind, at 128, two steps (any machine)")
    parser.add_argument("--layers", type=int, default=None, help="blocks of each kind (default: the model's)")
    parser.add_argument("--resolution", type=int, default=None, help="bucket (default 640; 128 with --tiny)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 3; 2 with --tiny)")
    parser.add_argument("--vram-budget", type=float, default=6.0, metavar="GB", help="streaming budget on a GPU")
    parser.add_argument("--only", nargs="+", choices=[c[0] for c in COMBINATIONS], help="these combinations")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled combinations")
    parser.add_argument("--no-torchao", action="store_true", help="leave out the torchao comparison")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.tiny:
        args.layers = 1 if args.layers is None else args.layers
    args.resolution = args.resolution or (128 if args.tiny else 640)
    args.steps = args.steps or (2 if args.tiny else 3)
    if not torch.cuda.is_available() and not args.tiny and args.layers is None:
        message = ("kernels.py: SageAttention, FP8 arithmetic and compile need an NVIDIA GPU with CUDA, and there is "
                   "none here; nothing was measured (--tiny, or the full width with --layers 1 --resolution 128 "
                   "--steps 2, runs the harness on this machine).")
        print(message, file=sys.stderr)
        print(json.dumps(dict(skipped=message)))
        return 0
    started = time.perf_counter()
    with torch.no_grad():
        result = report(args)
    result["wall_seconds"] = time.perf_counter() - started
    if not args.json:
        print(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
