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
    Device,
    MemoryTerms,
    ModelBytes,
    ModelManager,
    activation_bytes,
    available_ram_bytes,
    cuda_device,
    default_ram_budget,
    TierPlan,
    model_sizes,
    plan_use,
    size_text,
    weight_ram_budget,
)
from memory.cap import allocator_cap, cap_allocator
from memory.device import STAGING_BYTES

from ..events import StageName
from ..models.sets import MODEL_SPECS, MODELS_DIR_ENV
from ..setting_values import check_value
from ..settings import DEFAULTS, SETTINGS

LABELS = {"text_encoder": "text encoder (Llama)", "text_encoder_2": "text encoder (CLIP-L)",
          "image_encoder": "image encoder (SigLIP)", "vae": "VAE", "transformer": "transformer"}
# The models each stage of a run asks the memory manager for at once, in run order.
STAGES = ((StageName.ENCODING_PROMPT, ("text_encoder", "text_encoder_2")), (StageName.ENCODING_IMAGE, ("vae",)),
          (StageName.ENCODING_IMAGE, ("image_encoder",)), (StageName.SAMPLING, ("transformer",)),
          (StageName.DECODING, ("vae",)))
FP8_BYTES = 1
PREFETCH = 2  # streamed blocks copied ahead of the one running
# An untiled VAE decode of a few dozen frames at 640 pixels needs on the order of 20+ GiB; it grows
# with the frame's area. With less than this left beside the weights the VAE decodes in tiles.
UNTILED_DECODE_BYTES_640 = 24 * GiB
MiB = 1 << 20
# Under the allocator's cap, beside the weights and the activation reserve: library workspaces
# (cuBLAS, cuDNN), the allocator's rounding, a stage's small tensors.
WORKSPACE_BYTES = 256 * MiB
# What a CUDA 12 context takes, for planning where the GPU is not here to measure (check on another machine).
TYPICAL_CONTEXT_BYTES = 512 * MiB
NO_GPU_CARD_BYTES = 6 * GiB  # planning without a GPU and without a budget: the smallest card the app supports


def activation_reserve(resolution: int, window: int, width: int) -> int:
    """Device memory kept for one transformer call's activations at this size, `width` its hidden size.

    Tokens of one call: the noisy window (2x2 patches of the 1/8-size latent), about 2.5 frames'
    worth of packed clean/2x/4x context, the padded prompt and the SigLIP image tokens."""
    tokens = int((window + 2.5) * (resolution / 16) ** 2) + 512 + 729
    return activation_bytes(tokens, width)


def untiled_decode_bytes(resolution: int) -> int:
    return int(UNTILED_DECODE_BYTES_640 * (resolution / 640) ** 2)


def transformer_width(config) -> int:
    return config.num_attention_heads * config.attention_head_dim


def memory_terms(vram_bytes: int, resolution: int, window: int, width: int, ram_bytes: int | None = None) -> MemoryTerms:
    """FramePack's numbers for the memory manager: the budget, with one transformer call's activations kept."""
    return MemoryTerms(int(vram_bytes), activation_reserve(resolution, window, width), PREFETCH, ram_bytes)


def card_state(index: int | None = None) -> tuple[int, int, int] | None:
    """(total, free, held by torch's allocator) of the GPU, or None where there is none."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if index is None else index
    free, total = torch.cuda.mem_get_info(index)
    return total, free, torch.cuda.memory_reserved(index)


def placement_budget(vram_bytes: int | None, card: tuple[int, int, int] | None) -> int:
    """What the memory manager may place within, for a whole-process budget `vram_bytes` (None: what is
    free) on a card in state `card` (None: no GPU here; a card of the budget's size with a typical
    context on it): the allocator's cap (memory/cap.py) less the workspace."""
    if card is None:
        total = vram_bytes or NO_GPU_CARD_BYTES
        card = (total, total - TYPICAL_CONTEXT_BYTES, 0)
    return allocator_cap(*card, vram_bytes) - WORKSPACE_BYTES


def make_manager(device: torch.device | Device, budget_gb: float | None, models, request,
                 ram_budget_gb: float | None = None) -> ModelManager:
    """On a GPU: the caching allocator capped to the budget (given in GiB, or what is free), the CUDA
    context included, and a manager placing within the cap, with room kept for one step's activations
    at this size. A budget too small for some stage of the run is refused here, before any stage, with
    what to change. A simulated Device takes `budget_gb` as the placement budget. Without a GPU every
    model stays on the CPU, and the budget has nothing to limit."""
    budget = None if budget_gb is None else int(budget_gb * GiB)
    if not isinstance(device, Device):
        if torch.device(device).type != "cuda":
            return ModelManager("cpu")
        device = cuda_device(torch.device(device).index)
        cap = cap_allocator(device.torch_device, budget)  # from here an allocation past the budget fails loudly
        budget = cap - WORKSPACE_BYTES
    ram = None if ram_budget_gb is None else weight_ram_budget(int(ram_budget_gb * GiB))
    m = request.method
    terms = memory_terms(budget, m.resolution, m.window, transformer_width(models.transformer.config), ram)
    sizes = {key: model_sizes(getattr(models, key)) for key in LABELS
             if isinstance(getattr(models, key, None), torch.nn.Module)}
    short = plan_stages(sizes, terms).short
    if short:
        raise BudgetError(refusal(terms, short, m.resolution, (budget_gb or 0) * GiB - terms.budget_bytes))
    return ModelManager(device, budget_bytes=terms.budget_bytes, reserve_bytes=terms.reserve_bytes,
                        ram_budget_bytes=terms.ram_bytes, prefetch=terms.prefetch,
                        work_bytes=untiled_decode_bytes(m.resolution))


def _meta_model(key: str, model_set: str) -> torch.nn.Module:
    from ..models.published import meta_model

    return meta_model(key, model_set)


def _fp8_linear_weights(sub, name, tensor) -> int:
    fp8 = isinstance(sub, torch.nn.Linear) and name == "weight"
    return tensor.numel() * (FP8_BYTES if fp8 else tensor.element_size())


@lru_cache(maxsize=16)
def model_bytes(key: str, model_set: str, fp8: bool = False) -> ModelBytes:
    """A published model's planning sizes in the dtype it loads in, laid out as the manager lays it out."""
    return model_sizes(_meta_model(key, model_set), _fp8_linear_weights if fp8 and key == "transformer" else None)


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
    placed: bool = True  # False: no placement within the budget (the plan's problems say what it needs)


@dataclass
class RunPlan:
    model_set: str
    vram_budget_bytes: int
    ram_budget_bytes: int
    resolution: int
    seconds: float
    fp8: str  # the --fp8 mode planned for (off | storage | fast)
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

    @property
    def fp8_weights(self) -> bool:
        """The transformer's block weights kept in FP8: both storage and fast do (fast also multiplies in FP8)."""
        return self.fp8 != "off"

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
               f"{f', FP8 transformer ({self.fp8})' if self.fp8_weights else ''}: VRAM budget {size_text(self.vram_budget_bytes)}, "
               f"RAM budget {size_text(self.ram_budget_bytes)}."]
        for m in self.models:
            where = (f"{m.resident_blocks} on the GPU, {m.pinned_blocks} streamed from pinned RAM, "
                     f"{m.mapped_blocks} streamed from the mapped file" if m.blocks else "whole on the GPU")
            where = where if m.placed else "cannot be placed within this VRAM budget (see below)"
            out.append(f"  {m.label:24s} {size_text(m.total_bytes):>10s}  {m.blocks} blocks: {where}")
        t = self.model("transformer")
        if t is not None and t.placed:
            out.append(f"Per transformer step: {size_text(t.streamed_from_pinned)} streamed from pinned RAM, "
                       f"{size_text(t.streamed_from_disk)} from disk (the page cache holds what fits); skipped "
                       "steps of the step cache stream nothing.")
        if all(m.placed for m in self.models):
            out.append(f"Predicted peak: {size_text(self.peak_vram_bytes)} VRAM (activations "
                       f"{size_text(self.activation_reserve_bytes)} included), {size_text(self.peak_ram_bytes)} RAM "
                       "in the process's own memory.")
        else:  # the stages that could be planned say nothing of the one that cannot
            out.append(f"Predicted peak: none, some stage does not fit the VRAM budget; {size_text(self.peak_ram_bytes)}"
                       " RAM in the process's own memory.")
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
    """A budget a person can type, in GiB (as the flags take it and the plan prints it), rounded up to a half."""
    return f"{-(-nbytes * 2 // GiB) / 2:g}"


@dataclass
class StagePlans:
    """What the memory manager places at each stage of a run (nothing else held), and what cannot be placed."""
    models: dict[str, TierPlan] = field(default_factory=dict)  # by key, as first placed in the run
    peak_vram_bytes: int = 0  # the largest stage: its models' device bytes plus the activation reserve
    short: list[tuple[int, str, int, int]] = field(default_factory=list)  # (budget needed, key, fixed part, block)


def plan_stages(sizes: dict[str, ModelBytes], terms: MemoryTerms, host_held: int = 2 * STAGING_BYTES) -> StagePlans:
    """Each stage's models planned by `plan_use`, the manager's own rule, smallest first as it places them.

    `host_held`: the managed weights' host memory before the first placement (the staging ring)."""
    out = StagePlans()
    for _, keys in STAGES:
        keys = sorted((k for k in keys if k in sizes), key=lambda k: sizes[k].total_bytes)
        try:
            plans = plan_use([sizes[k] for k in keys], terms, 0, host_held)
        except BudgetError:
            # The least that plans: the smaller models whole, the largest's fixed part and one slot.
            *smaller, key = keys
            model = sizes[key]
            block = max(model.block_bytes, default=0)
            need = terms.reserve_bytes + sum(sizes[k].total_bytes for k in smaller) + model.other_bytes + block
            out.short.append((need, key, model.other_bytes, block))
            continue
        for key, plan in zip(keys, plans):
            out.models.setdefault(key, plan)
        out.peak_vram_bytes = max(out.peak_vram_bytes, sum(p.device.device_bytes for p in plans) + terms.reserve_bytes)
    return out


def refusal(terms: MemoryTerms, short: list[tuple[int, str, int, int]], resolution: int, overhead: int = 0) -> str:
    """The one sentence for a budget too small to plan: what it cannot run, and what to change.
    `overhead`: what the whole-process budget holds beyond the placement budget (the CUDA context...)."""
    need, key, rest, block = max(short)
    need += max(int(overhead), 0)
    return (f"A VRAM budget of {size_text(terms.budget_bytes + max(int(overhead), 0))} cannot run the "
            f"{LABELS.get(key, key)}: it needs "
            f"{size_text(rest)} on the GPU, slots to stream its blocks ({size_text(block)} each) and "
            f"{size_text(terms.reserve_bytes)} kept for activations at {resolution}; raise the VRAM budget to at "
            f"least {_gb(need)} GiB, or lower the resolution.")


def model_plan(key: str, sizes: ModelBytes, tiers: TierPlan) -> ModelPlan:
    device = tiers.device
    n_res, n_pin, blocks = device.resident.count(True), sum(tiers.pinned), len(sizes.block_bytes)
    return ModelPlan(key, LABELS.get(key, key), sizes.total_bytes, blocks if device.streams else 0, n_res, n_pin,
                     blocks - n_res - n_pin, device.device_bytes, tiers.streamed_from_pinned, tiers.streamed_from_disk)


def unplaced(key: str, sizes: ModelBytes) -> ModelPlan:
    """A model no placement within the budget can run: listed all the same, with its size."""
    blocks = len(sizes.block_bytes)
    return ModelPlan(key, LABELS.get(key, key), sizes.total_bytes, blocks, 0, 0, 0, 0, 0, 0, placed=False)


def plan_run(model_set: str = DEFAULTS["model"], vram_budget_gb: float | None = None, ram_budget_gb: float | None = None,
             resolution: int = DEFAULTS["resolution"], seconds: float = DEFAULTS["seconds"], fp8: str = DEFAULTS["fp8"],
             window: int = DEFAULTS["window"], models_dir: str | None = None) -> RunPlan:
    """`fp8`: the run's --fp8 mode (the table's words; a record's true/false read as storage/off)."""
    if model_set not in MODEL_SPECS or model_set == "tiny":
        raise ValueError(f"check plans a real model set: framepack or framepack-f1, not {model_set!r}.")
    fp8 = check_value(SETTINGS["fp8"], fp8)
    card = card_state()
    vram = int(vram_budget_gb * GiB) if vram_budget_gb else (card[1] if card else NO_GPU_CARD_BYTES)
    ram = int(ram_budget_gb * GiB) if ram_budget_gb else (default_ram_budget() or 16 * GiB)
    sizes = {key: model_bytes(key, model_set, fp8 != "off") for key in LABELS}
    width = transformer_width(_meta_model("transformer", model_set).config)
    # The manager's own budget for this request: the whole-process budget less the context and workspace.
    placing = placement_budget(int(vram_budget_gb * GiB) if vram_budget_gb else None, card)
    terms = memory_terms(placing, resolution, window, width, weight_ram_budget(ram))
    plan = RunPlan(model_set, vram, ram, resolution, seconds, fp8, terms.reserve_bytes)
    if terms.ram_bytes < 2 * STAGING_BYTES:
        plan.problems.append(
            f"A RAM budget of {size_text(ram)} leaves nothing for the app once about {size_text(PROCESS_BYTES)} go to "
            f"the process itself; raise --ram-budget to at least {_gb(PROCESS_BYTES + 2 * STAGING_BYTES)} GiB.")
    stages = plan_stages(sizes, terms)
    plan.models = [model_plan(key, sizes[key], stages.models[key]) if key in stages.models else unplaced(key, sizes[key])
                   for key in LABELS]
    if stages.short:
        plan.problems.insert(0, refusal(terms, stages.short, resolution, vram - placing))
    # The whole process: the largest stage, and outside the allocator the CUDA context.
    outside = card[0] - card[1] - card[2] if card else TYPICAL_CONTEXT_BYTES
    plan.peak_vram_bytes = stages.peak_vram_bytes + outside
    t = plan.model("transformer")
    pinned = t.streamed_from_pinned if t else 0
    plan.peak_ram_bytes = PROCESS_BYTES + 2 * STAGING_BYTES + pinned
    if plan.peak_ram_bytes > ram and not plan.problems:
        plan.problems.append(f"Raise --ram-budget to at least {_gb(plan.peak_ram_bytes)} GiB.")
    _plan_notes(plan, ram, t)
    _weights_on_disk(plan, models_dir)
    return plan


def _plan_notes(plan: RunPlan, ram: int, t: ModelPlan | None) -> None:
    available = available_ram_bytes()
    if available is not None and ram > available:
        plan.notes.append(f"Note: the RAM budget is more than this machine has available now ({size_text(available)}).")
    if t is not None and t.streamed_from_disk:
        plan.notes.append("Note: blocks streamed from disk are read from the OS page cache when it holds them, "
                          "else from the drive: an SSD keeps the steps fast.")
    plan.notes.append("The text encoder streams once per new prompt; a prompt seen before is read from the "
                      "prompt cache and never touches it; its blocks take pinned memory only if it runs twice "
                      "in one stage.")


def _weights_on_disk(plan: RunPlan, models_dir: str | None) -> None:
    from ..models.loading import hub_cache_dir
    from ..models.tiny import default_cache_dir

    spec = MODEL_SPECS[plan.model_set]
    sizes = {key: model_bytes(key, plan.model_set).total_bytes for key in LABELS}
    plan.weights_bytes = sum(sizes.values())
    models_dir = models_dir or os.environ.get(MODELS_DIR_ENV)
    missing = 0
    for key in LABELS:
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
    if plan.fp8_weights:
        t_blocks = model_bytes("transformer", plan.model_set, True).block_bytes
        full = model_bytes("transformer", plan.model_set, False).block_bytes
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
