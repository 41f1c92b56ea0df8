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


def videos(rank: int, jobs: list, folder: str, results) -> None:
    """Each rank's part of several whole videos, one spawn for all (starting processes is what costs on a
    CPU): `jobs` are (name, request, processes, port, stop_after_first_section); a rank below a job's
    processes runs it exactly as parallel/worker.py runs a rank (the pipeline, the split, the shared Stop),
    rank 0 writing the files. Rank 0 puts (name, latents, sections done, steps, made, (its sequence group's
    size, whether it made one CFG pass of two)) on `results` per job; (None, ...) ends the list."""
    import threading
    import traceback
    from pathlib import Path

    from framepack_core.events import SectionDone, Step
    from framepack_core.engine.generation import VideoPipeline
    from framepack_core.media.latents import load_latents
    from framepack_core.parallel.group import SharedStop, end_group, start_group
    from framepack_core.parallel.guidance import layout_for, parallel
    from framepack_core.run.lifecycle import mp4_tags
    from framepack_core.engine.session import Session
    from framepack_core.engine.session_config import SessionConfig
    from framepack_core.engine.work import Work
    from framepack_core.starts.picture import PictureOrigin
    from memory.usage import UsageMeter

    torch.set_num_threads(1)
    session = Session(SessionConfig(device="cpu"))
    try:
        for name, request, processes, port, stop_early in jobs:
            if rank >= processes:
                continue
            models, manager = session.prepare(request, lambda event: None)
            ranks = start_group(rank, processes, port, torch.device("cpu"), layout_for(request))
            steps, stop = [], threading.Event()

            def emit(event):
                if isinstance(event, Step):
                    steps.append(event.step)
                if stop_early and rank == 0 and isinstance(event, SectionDone):  # Stop pressed on rank 0 only
                    stop.set()

            video = Path(folder) / f"{name}-rank{rank}.mp4"
            latents = video.with_suffix(".latents.safetensors")
            work = Work(request, PictureOrigin(), video, latents, mp4_tags, emit, SharedStop(stop, ranks), UsageMeter(None))
            try:
                with parallel(models.transformer, ranks):
                    made = VideoPipeline(work, models, manager)()
            finally:
                session.release(manager)
                end_group()
            if rank == 0:
                saved = load_latents(latents)
                split = (ranks.world, ranks.guidance is not None)
                results.put((name, saved.video.numpy(), saved.done, steps, made, split))
    except BaseException:
        results.put((f"rank {rank} failed", traceback.format_exc(), 0, [], None, None))
        raise
    if rank == 0:
        results.put((None, None, 0, [], None, None))


def ranks_main(rank: int, forward_port: int, jobs: list, folder: str, calls, made) -> None:
    """One spawned process of test_parallel.py: the split transformer call (ranks 0-2), then the videos."""
    if rank < 3:
        compare(rank, 3, forward_port, (6, 2), calls)
    videos(rank, jobs, folder, made)
