"""Time per transformer step of one FramePack call on 1, 2 and 4 processes (sequence parallel, gloo, CPU).

    python bench/cpu/sequence_parallel.py                    # a model large enough for compute to dominate
    python bench/cpu/sequence_parallel.py --smallest         # the tiny width, 1 and 2 processes: what CI runs
    python bench/cpu/sequence_parallel.py --cuda --processes 1,2 --heads 24 --head-dim 128   # on 2 GPUs (NCCL)

Each process gets one CPU thread (torch.set_num_threads(1)), so N processes use N cores; on a machine
with fewer free cores than processes the speedup says more about the machine than the method. The
model is the real FramePack transformer class with random weights (the sizes are flags); the call
packs noisy latents, 1x/2x/4x history and text tokens as a section of FramePack does. Per process
count: seconds per step (rank 0, after one untimed step), bytes each rank sent per step, and the
share of the step spent in attention including its exchanges. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def build(args):
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    torch.manual_seed(0)
    model = HunyuanVideoFramepackTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=args.heads, attention_head_dim=args.head_dim,
        num_layers=args.double, num_single_layers=args.single, num_refiner_layers=1, patch_size=2, patch_size_t=1,
        qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=32, pooled_projection_dim=32,
        rope_axes_dim=(args.head_dim // 4, 3 * args.head_dim // 8, 3 * args.head_dim // 8),
        image_condition_type=None, has_image_proj=True, image_proj_dim=32, has_clean_x_embedder=True)
    return model.eval()


def inputs(args) -> dict:
    """One section's call: `window` noisy frames, 2 clean frames, 2 frames at 2x and 16 at 4x history."""
    g = torch.Generator().manual_seed(1)
    noise = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    h, w, t = args.latent_height, args.latent_width, args.text_tokens
    return dict(hidden_states=noise(1, 16, args.window, h, w), timestep=torch.tensor([700.0]),
                encoder_hidden_states=noise(1, t, 32), encoder_attention_mask=torch.ones(1, t, dtype=torch.bool),
                pooled_projections=noise(1, 32), image_embeds=noise(1, args.picture_tokens, 32),
                guidance=torch.tensor([10000.0]), indices_latents=torch.arange(3, 3 + args.window),
                latents_clean=noise(1, 16, 2, h, w), indices_latents_clean=torch.tensor([0, 3 + args.window]),
                latents_history_2x=noise(1, 16, 2, h, w), indices_latents_history_2x=torch.tensor([1, 2]),
                latents_history_4x=noise(1, 16, 16, h, w), indices_latents_history_4x=torch.arange(20, 36))


def rank_main(rank: int, world: int, port: int, args, results) -> None:
    from framepack_core.parallel.group import end_group, start_group
    from framepack_core.parallel.shard import sequence_parallel

    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}" if args.cuda else "cpu")
    dtype = torch.bfloat16 if args.cuda else torch.float32
    model = build(args).to(device, dtype) if args.cuda else build(args)
    call = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs(args).items()}
    ranks = start_group(rank, world, port, device)
    sync = torch.cuda.synchronize if args.cuda else (lambda: None)
    try:
        with torch.no_grad(), sequence_parallel(model, ranks) as plan:
            model(**call)  # untimed: first-call allocations
            ranks.traffic.reset()
            seconds = []
            for _ in range(args.steps):
                torch.distributed.barrier(group=ranks.group)
                started = time.perf_counter()
                model(**call)
                sync()
                seconds.append(time.perf_counter() - started)
            tokens = plan.total if plan is not None else None
    finally:
        end_group()
    traffic = ranks.traffic
    results.put((rank, statistics.median(seconds), traffic.bytes_sent / args.steps,
                 traffic.attention_seconds / sum(seconds) if world > 1 else None, tokens))


def measure(world: int, args) -> dict:
    from framepack_core.parallel.group import free_port

    context = mp.get_context("spawn")
    results, port = context.Queue(), free_port()
    processes = [context.Process(target=rank_main, args=(rank, world, port, args, results)) for rank in range(world)]
    for process in processes:
        process.start()
    got = sorted((results.get(timeout=3600) for _ in processes), key=lambda r: r[0])
    for process in processes:
        process.join()
    _, step, sent, share, tokens = got[0]
    return {"processes": world, "seconds_per_step": round(step, 4), "bytes_per_step_per_rank": int(sent),
            "max_bytes_per_step_any_rank": int(max(r[2] for r in got)),
            "attention_share": None if share is None else round(share, 3), "image_tokens": tokens}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smallest", action="store_true", help="the tiny width at 1 and 2 processes (CI)")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--double", type=int, default=1, help="dual-stream blocks")
    parser.add_argument("--single", type=int, default=2, help="single-stream blocks")
    parser.add_argument("--window", type=int, default=9, help="noisy latent frames")
    parser.add_argument("--latent-height", type=int, default=24)
    parser.add_argument("--latent-width", type=int, default=24)
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--picture-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cuda", action="store_true", help="one GPU per process (NCCL, bf16) instead of CPUs")
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args(argv)
    if args.smallest:
        args.processes, args.heads, args.head_dim, args.double, args.single = "1,2", 2, 16, 1, 1
        args.window, args.latent_height, args.latent_width, args.text_tokens, args.steps = 2, 4, 4, 4, 1
    return args


def main(argv=None) -> int:
    args = parse(argv)
    rows = [measure(int(n), args) for n in args.processes.split(",")]
    for row in rows:
        print(f"{row['processes']} process(es): {row['seconds_per_step']:.3f} s/step, "
              f"{row['bytes_per_step_per_rank'] / 2**20:.2f} MiB sent per step by rank 0, "
              f"attention {row['attention_share']} of the step", file=sys.stderr)
    by = {row["processes"]: row for row in rows}
    speedup = (round(by[1]["seconds_per_step"] / by[2]["seconds_per_step"], 3) if 1 in by and 2 in by else None)
    print(json.dumps({"bench": "sequence_parallel", "device": "cuda" if args.cuda else "cpu",
                      "width": args.heads * args.head_dim, "heads": args.heads, "blocks": args.double + args.single, "threads_per_process": 1, "speedup_at_2": speedup,
                      "runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
