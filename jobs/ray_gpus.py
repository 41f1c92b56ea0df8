"""How many GPUs a queued job gets from Ray, and whether any machine of the cluster can give them.

A job's `gpus` setting (one video on N GPUs, framepack_core/parallel/) needs its N GPUs on one machine:
its processes meet over localhost. A Ray actor always lives on one node, so a worker asked for
num_gpus=N is that; Ray alone would leave a job that no node can hold waiting for ever, so it is
refused first in one sentence.
"""
from __future__ import annotations

from framepack_core.settings import DEFAULTS


def gpus_asked(settings: dict) -> int:
    """The GPUs a job's flat settings ask for (the settings table's default when unset)."""
    return int(settings.get("gpus") or DEFAULTS["gpus"])


def worker_options(asked: int, cluster_gpus: int) -> dict:
    """ray.remote options of the worker that runs a job asking for `asked` GPUs. On a cluster without
    GPUs (CI) the job's processes share one CPU slot's worker, as a one-GPU job does."""
    if not cluster_gpus:
        return {"num_gpus": 0, "num_cpus": 1}
    return {"num_gpus": asked, "num_cpus": 0}


def refusal(asked: int, node_gpus: list[float]) -> str | None:
    """One sentence when no node of the cluster (`node_gpus`: each alive node's GPUs) has `asked`
    GPUs; None when one has, or when the cluster has no GPU at all (its jobs run on CPUs)."""
    most = int(max(node_gpus, default=0))
    if most == 0 or asked <= most:
        return None
    return (f"This job asks for {asked} GPUs on one machine, but no machine of the Ray cluster has more than "
            f"{most}; lower its GPUs setting to {most} or fewer.")


def node_gpus(nodes: list[dict]) -> list[float]:
    """Each alive node's GPUs, from ray.nodes()."""
    return [node.get("Resources", {}).get("GPU", 0) for node in nodes if node.get("Alive")]
