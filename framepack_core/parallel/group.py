"""The ranks of one video: their process group, the Stop flag they share, and what they exchange.

torch.distributed with gloo on a CPU and NCCL on CUDA GPUs. Two timeouts: joining waits up to
`START_TIMEOUT`, while a run's collectives wait at most `RUN_TIMEOUT`: a
rank that hangs or dies ends the run instead of blocking the others for ever (gloo also notices a
dead peer at once, by its closed connection). The ranks join only once each has its models loaded.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

# Joining waits only for processes whose models are loaded already (launch.py waits for that first).
START_TIMEOUT = timedelta(minutes=2)
# Within a run the ranks do the same work between collectives (every rank decodes and writes too), so a
# wait this long means a rank is stuck: the run ends within 30 s of it, with a resumable record.
RUN_TIMEOUT = timedelta(seconds=20)


def free_port() -> int:
    """A TCP port free on this machine now, for the ranks to meet on (localhost only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Traffic:
    """What this rank sent to the others and how long attention took, over a measured span."""
    bytes_sent: int = 0
    attention_seconds: float = 0.0
    calls: int = 0

    def reset(self) -> None:
        self.bytes_sent, self.attention_seconds, self.calls = 0, 0.0, 0


@dataclass(frozen=True)
class Layout:
    """How a run's processes share the work: `guidance` ways of CFG (2: the conditional and the
    unconditional pass at once) times `sequence` ways of the packed image tokens."""
    guidance: int
    sequence: int

    @staticmethod
    def of(processes: int, cfg: float, step_cache: bool) -> "Layout":
        """CFG on two processes whenever it can be: a CFG above 1, an even count, no step cache (a cache's
        decisions follow both passes in turn on one process); the sequence split takes the rest."""
        guidance = 2 if cfg != 1 and processes % 2 == 0 and not step_cache else 1
        return Layout(guidance, processes // guidance)


@dataclass
class Ranks:
    """This process's place among the ranks of one video. `rank`, `world` and `group` are its sequence
    group's (the processes that split one pass's tokens); `branch` is which CFG pass it makes (0: the
    conditional) and `guidance` the group that makes both; `everyone` the whole run's group."""
    rank: int
    world: int
    device: torch.device
    group: object = None  # the sequence group (RUN_TIMEOUT); None: the default group
    traffic: Traffic = field(default_factory=Traffic)
    branch: int = 0
    guidance: object = None  # the CFG group of two, or None without CFG-parallel
    everyone: object = None

    def all_gather_passes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """This rank's CFG pass and the other's, in branch order (conditional first)."""
        parts = [torch.empty_like(x) for _ in range(2)]
        dist.all_gather(parts, x.contiguous(), group=self.guidance)
        self.traffic.bytes_sent += x.numel() * x.element_size()
        return parts

    def all_gather_tokens(self, x: torch.Tensor, counts: list[int], dim: int = 1) -> torch.Tensor:
        """Every rank's share of `x` along `dim` (rank r holds counts[r] there), joined in rank order."""
        most = max(counts)
        pad = list(x.shape)
        pad[dim] = most - x.shape[dim]
        padded = torch.cat([x, x.new_zeros(pad)], dim=dim).contiguous() if pad[dim] else x.contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        self.traffic.bytes_sent += padded.numel() * padded.element_size() * (self.world - 1)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, counts)], dim=dim)

    def all_gather_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, heads/world, dim) on each rank -> (batch, tokens, heads, dim), heads in rank order."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        self.traffic.bytes_sent += x.numel() * x.element_size() * (self.world - 1)
        return torch.cat(parts, dim=2)

    def all_to_all(self, x: torch.Tensor, out_rows: int, send: list[int], receive: list[int]) -> torch.Tensor:
        """all_to_all_single along dim 0: `send[j]` rows of `x` to rank j, `receive[i]` rows from rank i."""
        out = x.new_empty((out_rows, *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), output_split_sizes=receive, input_split_sizes=send,
                               group=self.group)
        row = x[0].numel() * x.element_size() if len(x) else 0
        self.traffic.bytes_sent += row * (sum(send) - send[self.rank])
        return out


def start_group(rank: int, world: int, port: int, device: torch.device, layout: Layout | None = None) -> Ranks:
    """Join the ranks of one video (every rank calls this; it returns once all have joined). Process
    `rank` makes CFG pass rank // sequence on token share rank % sequence."""
    layout = layout or Layout(1, world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=START_TIMEOUT, device_id=device if device.type == "cuda" else None)

    def new_group(members):  # every rank creates every group, in the same order
        return dist.new_group(list(members), timeout=RUN_TIMEOUT, backend=backend)

    everyone, size = new_group(range(world)), layout.sequence
    sequences = [new_group(range(b * size, (b + 1) * size)) for b in range(layout.guidance)] if size < world else []
    pairs = [new_group((i, size + i)) for i in range(size)] if layout.guidance == 2 else []
    branch, share = divmod(rank, size)
    sequence = sequences[branch] if sequences else everyone
    return Ranks(share, size, device, sequence, branch=branch, guidance=pairs[share] if pairs else None,
                 everyone=everyone)


def end_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class SharedStop:
    """The run's Stop flag as every rank reads it: set on any rank (Stop is pressed on rank 0's page or
    command line), seen by all at the same check, so every rank raises Cancelled at the same step.

    `is_set` is a collective: only the pipeline's own thread may call it, the same number of times on
    every rank (generation.VideoPipeline.check does); `set` may be called from any thread."""

    def __init__(self, local: threading.Event, ranks: Ranks):
        self.local, self.ranks = local, ranks

    def set(self) -> None:
        self.local.set()

    def is_set(self) -> bool:
        flag = torch.tensor([1.0 if self.local.is_set() else 0.0], device=self.ranks.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.ranks.everyone)
        return bool(flag.item())


@contextmanager
def timed(traffic: Traffic):
    """Adds its body's seconds to `traffic.attention_seconds`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        traffic.attention_seconds += time.perf_counter() - started
        traffic.calls += 1
