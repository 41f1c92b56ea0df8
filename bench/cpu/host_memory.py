"""Host memory of a streamed model that does not fit the RAM budget: flat in the model's size.

    python bench/cpu/host_memory.py --json                 # real width (3072), 4 and 25 single blocks: 1.8 and 7.4 GiB
    python bench/cpu/host_memory.py --heads 2 --blocks 4,16 --json   # a small width, for tests

For each size: FramePack's transformer class (diffusers' HunyuanVideoFramepackTransformer3DModel,
the real configuration but for the number of blocks) is written with random bf16 weights as a
safetensors file in a temporary folder, one tensor at a time; a fresh process maps it (meta
device + parameters pointed into the file), streams it on the simulated device under a fixed
device budget and a 1 GiB RAM budget for three forward passes (pinning starts after the second),
and samples `RssAnon` from /proc/self/status after every block. Another fresh process loads the
same file wholly into memory and runs it resident: the streamed outputs must be bit-identical.
Files are deleted after each size. The last stdout line is JSON with `anon_rss_growth_ratio`
(peak RssAnon of the largest model / the smallest) and `max_abs_diff`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch  # noqa: E402

from bench.support.synthetic import FULL_CONFIG, transformer_class  # noqa: E402
from memory.host import anonymous_resident_bytes  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
PASSES = 3


def rss_anon() -> int:
    return anonymous_resident_bytes()


def config_for(heads: int, blocks: int) -> dict:
    config = {**FULL_CONFIG, "num_layers": 0, "num_single_layers": blocks}
    if heads != FULL_CONFIG["num_attention_heads"]:  # a narrower twin for tests: every width scaled down
        config.update(num_attention_heads=heads, text_embed_dim=64, pooled_projection_dim=32, image_proj_dim=48)
    return config


def meta_model(config: dict) -> torch.nn.Module:
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            return transformer_class()(**config).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)


def write_model(path: Path, config: dict, seed: int = 0) -> int:
    """Random weights (std 0.02, a fixed seed per tensor) written one tensor at a time."""
    from memory.mapped import write_safetensors

    state = meta_model(config).state_dict()
    names = sorted(state)

    def make(name: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed * 100003 + names.index(name))
        shape = state[name].shape
        return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)

    return write_safetensors(path, [(n, state[n].dtype, tuple(state[n].shape)) for n in names], make)


def small_inputs(config: dict) -> dict:
    """One transformer call with few tokens (a 4x4 latent, 8 prompt and 4 image tokens): the weights dominate."""
    generator = torch.Generator().manual_seed(1)

    def rand(*shape):
        return torch.randn(shape, generator=generator).to(torch.bfloat16)

    return dict(hidden_states=rand(1, 16, 1, 4, 4), timestep=torch.tensor([900.0]),
                encoder_hidden_states=rand(1, 8, config["text_embed_dim"]),
                encoder_attention_mask=torch.ones(1, 8, dtype=torch.bool),
                pooled_projections=rand(1, config["pooled_projection_dim"]),
                image_embeds=rand(1, 4, config["image_proj_dim"]), indices_latents=torch.arange(1, 2),
                guidance=torch.tensor([10000.0]), latents_clean=rand(1, 16, 2, 4, 4),
                indices_latents_clean=torch.tensor([0, 2]), latents_history_2x=rand(1, 16, 2, 4, 4),
                indices_latents_history_2x=torch.arange(3, 5), latents_history_4x=rand(1, 16, 16, 4, 4),
                indices_latents_history_4x=torch.arange(5, 21), return_dict=False)


@torch.no_grad()
def run_streamed(path: Path, config: dict, ram_budget: int, out: Path) -> dict:
    """In a fresh process: map, stream on the simulated device, sample RssAnon after every block."""
    from memory import ModelManager, SimulatedDevice
    from memory.mapped import bind_mapped, map_folder

    baseline = rss_anon()
    model = meta_model(config)
    files, tensors = map_folder(path.parent)
    missing = bind_mapped(model, tensors)
    assert not missing, missing[:3]
    model._mapped_files = files  # the mappings live as long as the model
    after_map = rss_anon()
    fixed = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not n.startswith("single"))
    block = sum(p.numel() * p.element_size() for p in model.single_transformer_blocks[0].parameters())
    vram = fixed + int(3.5 * block)  # the same device budget at every size: 3 slots, nothing resident
    device = SimulatedDevice()
    manager = ModelManager(device, budget_bytes=vram, reserve_bytes=0, ram_budget_bytes=ram_budget)
    peak = [rss_anon()]
    handles = [b.register_forward_hook(lambda *a: peak.append(rss_anon())) for b in model.single_transformer_blocks]
    inputs = small_inputs(config)
    outputs = []
    with manager.use(model):
        placement = manager.placement(model)
        for _ in range(PASSES):
            outputs.append(model(**inputs)[0])
            peak.append(rss_anon())
        host_bytes = manager.host_anon_bytes()
        pinned_blocks = sum(g.pinned for g in placement.block_groups)
    for handle in handles:
        handle.remove()
    assert all(torch.equal(outputs[0], o) for o in outputs[1:]), "passes differ"
    torch.save(outputs[-1], out)
    return dict(blocks=config["num_single_layers"], file_bytes=path.stat().st_size, peak_rss_anon=max(peak),
                rss_anon_before_load=baseline, rss_anon_after_map=after_map, device_budget_bytes=vram,
                device_peak_bytes=device.peak_bytes, ram_budget_bytes=ram_budget, host_weight_bytes=host_bytes,
                blocks_pinned=pinned_blocks, blocks_streamed=placement.plan.resident.count(False))


@torch.no_grad()
def run_resident(path: Path, config: dict, out: Path) -> dict:
    """In a fresh process: the whole file in the process's memory, run as an ordinary model."""
    from safetensors.torch import load_file

    from memory.mapped import bind_mapped

    model = meta_model(config)
    missing = bind_mapped(model, load_file(path))
    assert not missing
    torch.save(model(**small_inputs(config))[0], out)
    return dict(peak_rss_anon=rss_anon())


def _child(mode: str, path: Path, config: dict, ram_budget: int, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--file", str(path), "--config", json.dumps(config),
               "--ram-budget", str(ram_budget / GiB), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"host_memory.py: the {mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="4,25", help="single-stream block counts, comma separated")
    parser.add_argument("--heads", type=int, default=FULL_CONFIG["num_attention_heads"],
                        help="attention heads of 128 channels (24: the real width, 3072)")
    parser.add_argument("--ram-budget", type=float, default=1.0, help="GiB of RAM for the weights' host copies")
    parser.add_argument("--dir", default=None, help="where the temporary model files go (default: the temp folder)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--child", choices=("streamed", "resident"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    ram_budget = int(args.ram_budget * GiB)
    if args.child:
        config = json.loads(args.config)
        config["rope_axes_dim"] = tuple(config["rope_axes_dim"])
        result = (run_streamed(Path(args.file), config, ram_budget, Path(args.out)) if args.child == "streamed"
                  else run_resident(Path(args.file), config, Path(args.out)))
        print(json.dumps(result))
        return 0

    sizes, diffs = [], []
    folder = Path(tempfile.mkdtemp(prefix="host-memory-", dir=args.dir))
    try:
        for blocks in (int(b) for b in args.blocks.split(",")):
            config = config_for(args.heads, blocks)
            model_dir = folder / f"model-{blocks}"
            model_dir.mkdir()
            path = model_dir / "model.safetensors"
            write_model(path, config)
            streamed = _child("streamed", path, config, ram_budget, folder / "streamed.pt")
            resident = _child("resident", path, config, ram_budget, folder / "resident.pt")
            a, b = torch.load(folder / "streamed.pt"), torch.load(folder / "resident.pt")
            diffs.append((a.float() - b.float()).abs().max().item() if a.shape == b.shape else float("inf"))
            streamed["bit_identical"] = bool(torch.equal(a, b))
            streamed["resident_peak_rss_anon"] = resident["peak_rss_anon"]
            sizes.append(streamed)
            shutil.rmtree(model_dir)
            if not args.json:
                print(json.dumps(streamed), file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    smallest, largest = min(sizes, key=lambda s: s["file_bytes"]), max(sizes, key=lambda s: s["file_bytes"])
    result = dict(device="simulated", width=args.heads * 128, ram_budget_bytes=ram_budget, sizes=sizes,
                  file_size_ratio=largest["file_bytes"] / smallest["file_bytes"],
                  anon_rss_growth_ratio=largest["peak_rss_anon"] / smallest["peak_rss_anon"],
                  max_abs_diff=max(diffs), bit_identical=all(s["bit_identical"] for s in sizes))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
