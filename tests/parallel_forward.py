"""Run in spawned processes by test_parallel.py: one FramePack transformer call, whole and split over ranks."""
from __future__ import annotations

import torch


def tiny_transformer(heads: int):
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    from framepack_core.models.tiny import TINY_TRANSFORMER_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = TINY_TRANSFORMER_CONFIG | {"num_attention_heads": heads}
        return HunyuanVideoFramepackTransformer3DModel(**config).eval()


def packed_inputs(text_tokens: int = 7) -> dict:
    """A call as method/sections.py makes it: noisy latents, clean 1x/2x/4x history and their frame indices."""
    g = torch.Generator().manual_seed(1)
    noise = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    height, width = 6, 10  # latent pixels: 15 tokens a frame after 2x2 patches
    return dict(hidden_states=noise(1, 16, 2, height, width), timestep=torch.tensor([700.0]),
                encoder_hidden_states=noise(1, text_tokens, 32),
                encoder_attention_mask=torch.ones(1, text_tokens, dtype=torch.bool),
                pooled_projections=noise(1, 32), image_embeds=noise(1, 5, 32), guidance=torch.tensor([10000.0]),
                indices_latents=torch.tensor([4, 5]),
                latents_clean=noise(1, 16, 2, height, width), indices_latents_clean=torch.tensor([0, 6]),
                latents_history_2x=noise(1, 16, 2, height, width), indices_latents_history_2x=torch.tensor([7, 8]),
                latents_history_4x=noise(1, 16, 16, height, width), indices_latents_history_4x=torch.arange(9, 25))


def compare(rank: int, world: int, port: int, heads_list, results) -> None:
    """Each rank, for each head count: the whole call (one process's answer), the split one, and the whole
    one again after the split is undone; put on `results` with the token counts and the bytes sent."""
    from framepack_core.parallel.group import end_group, start_group
    from framepack_core.parallel.shard import sequence_parallel

    torch.set_num_threads(1)
    ranks, calls = start_group(rank, world, port, torch.device("cpu")), []
    try:
        for heads in heads_list:
            model, inputs = tiny_transformer(heads), packed_inputs()
            ranks.traffic.reset()
            with torch.no_grad():
                whole = model(**inputs)[0]
                with sequence_parallel(model, ranks) as plan:
                    split = model(**inputs)[0]
                    counts, ulysses = plan.counts, model.transformer_blocks[0].attn.processor.ulysses
                undone = model(**inputs)[0]
            # numpy: a tensor put on a queue is shared through this process, which may be gone when it is read
            calls.append((heads, whole.numpy(), split.numpy(), undone.numpy(), counts, ulysses,
                          ranks.traffic.bytes_sent))
    finally:
        end_group()
    results.put((rank, calls))
