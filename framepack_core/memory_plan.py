"""The memory plan of a run, made before any weight is read: `python app.py check`, and the page's line.

The real set's models are built on the meta device from their published configurations
(models/published.py), so their blocks' exact byte counts are known without the 43 GB of weights.
The memory planner (memory/budget.py) then decides, as the run will, what stays on the device,
what streams from pinned memory and what from the mapped files, under both budgets.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from memory import (
    GiB,
    PROCESS_BYTES,
    BudgetError,
    activation_bytes,
    available_ram_bytes,
    default_ram_budget,
    find_block_lists,
    plan_tiers,
    size_text,
    weight_ram_budget,
)
from memory.device import STAGING_BYTES

from .models.sets import MODEL_SETS, MODELS_DIR_ENV

STAGES = (("text_encoder", "text encoder (Llama)"), ("text_encoder_2", "text encoder (CLIP-L)"),
          ("image_encoder", "image encoder (SigLIP)"), ("vae", "VAE"), ("transformer", "transformer"))
FP8_BYTES = 1


def activation_reserve(resolution: int, window: int, width: int) -> int:
    """Device memory kept for one transformer call's activations at this size (session.make_manager's rule).

    Tokens of one call: the noisy window (2x2 patches of the 1/8-size latent), about 2.5 frames'
    worth of packed clean/2x/4x context, the padded prompt and the SigLIP image tokens."""
    tokens = int((window + 2.5) * (resolution / 16) ** 2) + 512 + 729
    return activation_bytes(tokens, width)


def _meta_model(key: str, model_set: str) -> torch.nn.Module:
    from .models.published import meta_model

    return meta_model(key, model_set)


def _unique_bytes(modules, fp8_linears: bool = False) -> int:
    seen, total = set(), 0
    for module in modules:
        for sub in module.modules():
            fp8 = fp8_linears and isinstance(sub, torch.nn.Linear)
            for name, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                size = FP8_BYTES if fp8 and name == "weight" else tensor.element_size()
                total += tensor.numel() * size
    return total


@lru_cache(maxsize=16)
def model_bytes(key: str, model_set: str, fp8: bool = False) -> tuple[tuple[int, ...], int]:
    """(bytes of each block, bytes of the rest) of a published model, in the dtype it loads in."""
    model = _meta_model(key, model_set)
    lists = find_block_lists(model)
    fp8 = fp8 and key == "transformer"
    blocks = tuple(_unique_bytes([b], fp8) for blocks in lists for b in blocks)
    return blocks, _unique_bytes([model]) - sum(_unique_bytes([b]) for blocks in lists for b in blocks)


@dataclass
class ModelPlan:
    key: str
    label: str
    total_bytes: int
    blocks: int
    resident_blocks: int
    pinned_blocks: int
    mapped_blocks: int
    device_bytes: int
    streamed_from_pinned: int  # per forward pass
    streamed_from_disk: int


@dataclass
class RunPlan:
    model_set: str
    vram_budget_bytes: int
    ram_budget_bytes: int
    resolution: int
    seconds: float
    fp8: bool
    activation_reserve_bytes: int
    models: list[ModelPlan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each says what to change
    notes: list[str] = field(default_factory=list)
    peak_vram_bytes: int = 0
    peak_ram_bytes: int = 0
    weights_present: bool = False
    weights_bytes: int = 0
    disk_needed_bytes: int = 0
    disk_free_bytes: int | None = None

    @property
    def fits(self) -> bool:
        return not self.problems

    def model(self, key: str) -> ModelPlan | None:
        return next((m for m in self.models if m.key == key), None)

    def as_dict(self) -> dict:
        return asdict(self) | {"fits": self.fits}

    def line(self) -> str:
        """One line for the page."""
        if not self.fits:
            return "Memory plan: does not fit. " + self.problems[0]
        t = self.model("transformer")
        return (f"Memory plan ({self.resolution}): {t.resident_blocks} of {t.blocks} transformer blocks on the GPU, "
                f"{t.pinned_blocks} streamed from pinned RAM, {t.mapped_blocks} from disk; "
                f"peak about {size_text(self.peak_vram_bytes)} VRAM, {size_text(self.peak_ram_bytes)} RAM.")

    def lines(self) -> list[str]:
        out = [f"Model set {self.model_set}, {self.resolution} bucket, {self.seconds:g} s"
               f"{', FP8 transformer' if self.fp8 else ''}: VRAM budget {size_text(self.vram_budget_bytes)}, "
               f"RAM budget {size_text(self.ram_budget_bytes)}."]
        for m in self.models:
            where = (f"{m.resident_blocks} on the GPU, {m.pinned_blocks} streamed from pinned RAM, "
                     f"{m.mapped_blocks} streamed from the mapped file" if m.blocks else "whole on the GPU")
            out.append(f"  {m.label:24s} {size_text(m.total_bytes):>10s}  {m.blocks} blocks: {where}")
        t = self.model("transformer")
        if t is not None:
            out.append(f"Per transformer step: {size_text(t.streamed_from_pinned)} streamed from pinned RAM, "
                       f"{size_text(t.streamed_from_disk)} from disk (the page cache holds what fits); skipped "
                       "steps of the step cache stream nothing.")
        out.append(f"Predicted peak: {size_text(self.peak_vram_bytes)} VRAM (activations "
                   f"{size_text(self.activation_reserve_bytes)} included), {size_text(self.peak_ram_bytes)} RAM "
                   "in the process's own memory.")
        present = "present locally" if self.weights_present else "not found locally"
        disk = f"; {size_text(self.disk_needed_bytes)} of disk needed" if self.disk_needed_bytes else ""
        free = f" ({size_text(self.disk_free_bytes)} free)" if self.disk_free_bytes is not None else ""
        out.append(f"Weights: {size_text(self.weights_bytes)}, {present}{disk}{free}.")
        out += self.notes
        if self.fits:
            out.append("This run fits both budgets.")
        else:
            out += ["Does not fit:"] + [f"  {p}" for p in self.problems]
        return out


def _gb(nbytes: float) -> str:
    """A budget a person can type, rounded up to half a GB."""
    return f"{-(-nbytes * 2 // GiB) / 2:g}"


def plan_run(model_set: str = "framepack", vram_budget_gb: float | None = None, ram_budget_gb: float | None = None,
             resolution: int = 640, seconds: float = 5.0, fp8: bool = False, window: int = 9,
             models_dir: str | None = None) -> RunPlan:
    if model_set not in MODEL_SETS or model_set == "tiny":
        raise ValueError(f"check plans a real model set: framepack or framepack-f1, not {model_set!r}.")
    vram = int(vram_budget_gb * GiB) if vram_budget_gb else _free_vram()
    ram = int(ram_budget_gb * GiB) if ram_budget_gb else (default_ram_budget() or 16 * GiB)
    t_blocks, t_rest = model_bytes("transformer", model_set, fp8)
    width = 24 * 128  # the transformer's hidden size (published: 24 heads of 128)
    reserve = activation_reserve(resolution, window, width)
    plan = RunPlan(model_set, vram, ram, resolution, seconds, fp8, reserve)
    weight_ram = weight_ram_budget(ram)
    pin_room = max(weight_ram - 2 * STAGING_BYTES, 0)
    if weight_ram < 2 * STAGING_BYTES:
        plan.problems.append(
            f"A RAM budget of {size_text(ram)} leaves nothing for the app once about {size_text(PROCESS_BYTES)} go to "
            f"the process itself; raise --ram-budget to at least {_gb(PROCESS_BYTES + 2 * STAGING_BYTES)} GB.")
    peak_vram, short = 0, []
    for key, label in STAGES:
        blocks, rest = (t_blocks, t_rest) if key == "transformer" else model_bytes(key, model_set)
        room = pin_room if key == "transformer" else 0  # the others run once a stage: never pinned
        try:
            tiers = plan_tiers(blocks, rest, vram - reserve, room, 0, 2)
        except BudgetError:
            short.append((reserve + rest + max(blocks, default=0) * 3, label, rest, max(blocks, default=0)))
            continue
        device = tiers.device
        n_res = device.resident.count(True)
        n_pin = sum(tiers.pinned)
        plan.models.append(ModelPlan(key, label, rest + sum(blocks), len(blocks) if device.streams else 0,
                                     n_res, n_pin, len(blocks) - n_res - n_pin, device.device_bytes,
                                     tiers.streamed_from_pinned, tiers.streamed_from_disk))
        peak_vram = max(peak_vram, device.device_bytes + reserve)
    if short:
        need, label, rest, block = max(short)
        plan.problems.insert(0, 
            f"A VRAM budget of {size_text(vram)} cannot run the {label}: it needs {size_text(rest)} on the GPU, "
            f"slots to stream its blocks ({size_text(block)} each) and {size_text(reserve)} kept for activations at "
            f"{resolution}. Raise --vram-budget to at least {_gb(need)} GB, or lower --resolution.")
    plan.peak_vram_bytes = peak_vram
    t = plan.model("transformer")
    pinned = t.streamed_from_pinned if t else 0
    plan.peak_ram_bytes = PROCESS_BYTES + 2 * STAGING_BYTES + pinned
    if plan.peak_ram_bytes > ram and not plan.problems:
        plan.problems.append(f"Raise --ram-budget to at least {_gb(plan.peak_ram_bytes)} GB.")
    available = available_ram_bytes()
    if available is not None and ram > available:
        plan.notes.append(f"Note: the RAM budget is more than this machine has available now ({size_text(available)}).")
    if t is not None and t.streamed_from_disk:
        plan.notes.append("Note: blocks streamed from disk are read from the OS page cache when it holds them, "
                          "else from the drive: an SSD keeps the steps fast.")
    plan.notes.append("The text encoder streams once per new prompt; a prompt seen before is read from the "
                      "prompt cache and never touches it.")
    _weights_on_disk(plan, models_dir)
    return plan


def _free_vram() -> int:
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free
    return 6 * GiB  # no GPU here: plan for the smallest card the app supports


def _weights_on_disk(plan: RunPlan, models_dir: str | None) -> None:
    from .models.loading import hub_cache_dir
    from .models.tiny import default_cache_dir

    spec = MODEL_SETS[plan.model_set]
    sizes = {key: sum(model_bytes(key, plan.model_set)[0]) + model_bytes(key, plan.model_set)[1]
             for key, _ in STAGES}
    plan.weights_bytes = sum(sizes.values())
    models_dir = models_dir or os.environ.get(MODELS_DIR_ENV)
    missing = 0
    for key, _ in STAGES:
        source = spec.sources[key]
        sub = source.subfolder or ""
        if models_dir:
            folders = [Path(models_dir) / source.repo_id / sub]
        else:
            snapshots = hub_cache_dir() / f"models--{source.repo_id.replace('/', '--')}" / "snapshots"
            folders = [s / sub for s in snapshots.glob("*")] if snapshots.is_dir() else []
        if not any(any(f.glob("*.safetensors")) for f in folders if f.is_dir()):
            missing += sizes[key]
    plan.weights_present = missing == 0
    fp8_cache = 0
    if plan.fp8:
        t_blocks, _ = model_bytes("transformer", plan.model_set, True)
        full, _ = model_bytes("transformer", plan.model_set, False)
        fp8_cache = sum(full) - sum(t_blocks)  # the FP8 weights written once: about half the blocks' bf16 bytes
        plan.notes.append(f"FP8: the transformer's block weights are converted once and kept on disk "
                          f"({size_text(fp8_cache)}); later starts map them and convert nothing.")
    plan.disk_needed_bytes = missing + fp8_cache
    where = Path(models_dir) if models_dir else default_cache_dir()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        plan.disk_free_bytes = shutil.disk_usage(where).free
    except OSError:
        plan.disk_free_bytes = None
    if plan.disk_free_bytes is not None and plan.disk_needed_bytes > plan.disk_free_bytes:
        plan.problems.append(f"The weights need {size_text(plan.disk_needed_bytes)} of disk and "
                             f"{size_text(plan.disk_free_bytes)} are free at {where}: free some space.")
