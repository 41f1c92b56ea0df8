"""A run rehearsed at full size on a CPU: `python app.py check --rehearse`, and `rehearse(...)` for tests.

The published models are built on the meta device (models/published.py), placed by the run's own
memory manager (memory_plan.make_manager's terms) on a MetaDevice (memory/rehearsal.py), and driven
stage after stage in the order a run takes (generation.py): the prompt through Llama and CLIP-L,
the picture through the VAE (untiled, as the kinds of start encode) and SigLIP, each section's transformer
call through the app's own denoiser (method/sections.make_denoiser) with its block streamer and
LoRA hooks, each section's decode with the run's tiling choice (`manager.short_of_room()`). Every
tensor has a shape, a dtype and a device and no data, so a 640 run at 13B takes seconds, and each
stage's peak of live device bytes is counted: placed weights, streaming slots, activations.

Rows carry a run's `record["stages"]` fields (memory/usage.py StageUsage) under the same stage
names, so a GPU run and a rehearsal compare row by row. What needs real values takes one fixed
path, named in `FIXED_PATHS`; a stage whose op cannot run without data is reported with that op.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from functools import lru_cache
from types import SimpleNamespace

import torch

from memory import GiB, BudgetError
from memory.rehearsal import LiveBytes, MetaDevice, replayed
from memory.swap import PIN_AFTER_PASSES

from ..events import StageName
from .memory_plan import (
    LABELS,
    NO_GPU_CARD_BYTES,
    card_state,
    make_manager,
    placement_budget,
    plan_run,
)
from ..method.buckets import nearest_bucket
from ..method.schedule import decode_span
from ..method.sections import Conditioning, SectionSettings, _history_and_layouts, make_denoiser
from ..models.encoders import CLIP_TOKENS, LLAMA_TOKENS, PROMPT_LENGTH, set_vae_tiling
from ..models.lora import LoraHook
from ..models.sets import MODEL_SPECS
# The report is its own module; CONTEXT_RESERVE_BYTES is named here too for the callers of rehearse().
from .rehearsal_report import CONTEXT_RESERVE_BYTES, Rehearsal, StageRow  # noqa: F401
from ..settings import DEFAULTS, SamplingMode

LATENT_CHANNELS = 16
SIGLIP_SIZE = 384


def rehearsal_budget_gb(vram_budget_gb: float | None) -> float:
    """The budget a rehearsal holds the run to: the one given, else what check plans for (what is free on
    this machine's GPU, or the smallest card the app supports)."""
    if vram_budget_gb:
        return vram_budget_gb
    card = card_state()
    return (card[1] if card else NO_GPU_CARD_BYTES) / GiB


@lru_cache(maxsize=2)
def _models(model_set: str) -> SimpleNamespace:
    """The published models on meta, as a run loads them (mapped, in their dtypes). Reused: a rehearsal
    leaves them as it found them (every placement evicted, hooks removed)."""
    from ..models.published import meta_model

    return SimpleNamespace(spec=MODEL_SPECS[model_set], **{key: meta_model(key, model_set) for key in LABELS})


def rehearse(model_set: str = DEFAULTS["model"], vram_budget_gb: float = 6, ram_budget_gb: float | None = None,
             resolution: int = DEFAULTS["resolution"], seconds: float = DEFAULTS["seconds"],
             window: int = DEFAULTS["window"], cfg: float = DEFAULTS["cfg"], vae_tiling: bool | None = None,
             lora_rank: int = 0, passes: int = PIN_AFTER_PASSES, hooks=None) -> Rehearsal:
    """Every stage of a run of these settings, at full size with no data (see the module's text).

    `lora_rank`: a LoRA of this rank on every transformer block's Linear (0: none). `passes`: transformer
    steps per section (fewer than two: the streamer never pins, so no pinned bytes; the device's peaks are
    the same). `hooks`: {stage name: callable} called inside that stage with (models, device): a test
    leaves a tensor on the device with one."""
    if model_set not in MODEL_SPECS or model_set == "tiny":
        raise ValueError(f"a rehearsal runs a real model set: framepack or framepack-f1, not {model_set!r}.")
    plan = plan_run(model_set, vram_budget_gb, ram_budget_gb, resolution, seconds, "off", window)
    height, width = nearest_bucket(resolution, resolution, resolution)
    budget = int(vram_budget_gb * GiB)
    out = Rehearsal(model_set, budget, resolution, seconds, height, width, vae_tiling, plan.peak_vram_bytes,
                    budget - CONTEXT_RESERVE_BYTES)
    models = _models(model_set)
    request = SimpleNamespace(method=SimpleNamespace(resolution=resolution, window=window))
    device = MetaDevice()
    placing = placement_budget(budget, None) / GiB
    ram = ram_budget_gb if ram_budget_gb is not None else plan.ram_budget_bytes / GiB
    try:
        manager = make_manager(device, placing, models, request, ram)
    except BudgetError as error:  # check's own sentence (its budget is the whole process's), with the stage
        out.refusal = _with_stage(next((p for p in plan.problems if "cannot run the" in p), str(error)))
        return out
    settings = SectionSettings(seconds=seconds, window=window, cfg=cfg)
    stages = _Stages(device, manager, out, hooks or {})
    try:
        with torch.no_grad(), _fused_attention(), LiveBytes(device, _scalar) as live:
            stages.live = live
            _run(stages, models, settings, height, width, lora_rank, vae_tiling, passes)
            stages.end()
        out.answered = [f"{dtype} read as {value} ({count}x)" for (dtype, value), count in live.answered.items()]
    finally:
        manager.release()
        device.evict_all()
    return out


def _scalar(tensor: torch.Tensor):
    """The fixed prompt's data-dependent reads: Llama's mask is all real tokens (`all()` is True), and the
    transformer's prompt mask has LLAMA_TOKENS of them (the text crop's length)."""
    return True if tensor.dtype == torch.bool else LLAMA_TOKENS


def _with_stage(message: str) -> str:
    """check's refusal, with the stage of the run whose model it names."""
    from .memory_plan import STAGES

    for stage, keys in STAGES:
        if any(f"cannot run the {LABELS[k]}" in message for k in keys):
            return f"Stage {stage}: {message}"
    return message


class _Stages:
    """Stage boundaries as a run's UsageMeter draws them: a stage lasts until the next begins."""

    def __init__(self, device: MetaDevice, manager, out: Rehearsal, hooks: dict):
        self.device, self.manager, self.out, self.hooks = device, manager, out, hooks
        self.live: LiveBytes | None = None
        self._open: dict | None = None
        self.lora: list[LoraHook] = []  # their device copies stay for the whole sampling loop, as in a run

    def kept_bytes(self) -> int:
        """Device bytes the run keeps across stages by design: the LoRAs' matrices (models/lora.py)."""
        return sum(t.numel() * t.element_size() for hook in self.lora for pair in hook._placed.values() for t in pair)

    def begin(self, stage: str, section: int | None = None, uses: tuple = ()) -> None:
        self.end()
        self.live.reset()
        self._open = {"stage": stage, "section": section, "uses": uses, "moved": self.device.bytes_moved,
                      "live": self.live.live - self.kept_bytes(), "not_carried": None}

    def failed(self, op: str) -> None:
        self._open["not_carried"] = op

    def end(self) -> None:
        if self._open is None:
            return
        o, self._open = self._open, None
        self.live.note()
        peak, placed = self.live.peak, [self.manager.placement(m) for m in o["uses"]]
        plans = [p for p in (self.manager.planned(m) for m in o["uses"]) if p is not None]
        mapped = sum(g.mapped_bytes for p in placed if p is not None for g in p.groups if not g.pinned)
        self.out.rows.append(StageRow(
            o["stage"], o["section"], None, peak.total, None, self.device.bytes_moved - o["moved"], None,
            self.device.pinned_bytes, sum(p.device.device_bytes for p in plans) if plans else None,
            peak.weights, peak.slots, peak.activations, peak.op, mapped,
            max(self.live.live - self.kept_bytes() - o["live"], 0),
            self.out.limit_bytes,
            o["not_carried"]))

    def hook(self, stage: str, models) -> None:
        if stage in self.hooks:
            self.hooks[stage](models, self.device)


@contextmanager
def _carried(stages: _Stages):
    """A stage's work; an op that needs data ends the stage's work, named in its row, not the rehearsal."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as error:
        stages.failed(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")


def _run(stages: _Stages, models, settings: SectionSettings, height: int, width: int, lora_rank: int,
         vae_tiling: bool | None, passes: int) -> None:
    manager, meta = stages.manager, stages.device.torch_device
    stages.begin(StageName.LOADING)
    stages.begin(StageName.ENCODING_PROMPT, uses=(models.text_encoder, models.text_encoder_2))
    # The outputs' shapes, for the stages after one that could not be carried.
    embeds = torch.zeros(1, PROMPT_LENGTH, models.text_encoder.config.hidden_size, dtype=models.text_encoder.dtype)
    mask, pooled = _prompt_mask(), torch.zeros(1, 768, dtype=models.text_encoder_2.dtype)
    tokens = (SIGLIP_SIZE // models.image_encoder.config.patch_size) ** 2
    image_embeds = torch.zeros(1, tokens, models.image_encoder.config.hidden_size, dtype=models.image_encoder.dtype)
    with _carried(stages), manager.use(models.text_encoder, models.text_encoder_2):
        embeds, mask, pooled = _encode_prompt(models, meta)
        stages.hook(StageName.ENCODING_PROMPT, models)
    stages.begin(StageName.ENCODING_IMAGE, uses=(models.vae, models.image_encoder))
    h, w = height // 8, width // 8
    start = torch.zeros(1, LATENT_CHANNELS, 1, h, w)  # latents are small: real host tensors, as in a run
    with _carried(stages):
        with manager.use(models.vae):
            set_vae_tiling(models.vae, False)  # the kinds of start encode untiled (starts/)
            _host(models.vae.encode(torch.zeros(1, 3, 1, height, width, dtype=models.vae.dtype).to(meta)).latent_dist.mode())
        with manager.use(models.image_encoder):
            pixels = torch.zeros(1, 3, SIGLIP_SIZE, SIGLIP_SIZE, dtype=models.image_encoder.dtype)
            image_embeds = _host(models.image_encoder(pixel_values=pixels.to(meta)).last_hidden_state)
        stages.hook(StageName.ENCODING_IMAGE, models)
    cond = Conditioning(embeds, mask, pooled, image_embeds, (embeds, mask, pooled) if settings.cfg != 1 else None)
    _sections(stages, models, settings, start, cond, lora_rank, vae_tiling, passes)


def _sections(stages: _Stages, models, settings: SectionSettings, start: torch.Tensor, cond: Conditioning,
              lora_rank: int, vae_tiling: bool | None, passes: int) -> None:
    manager, meta, transformer = stages.manager, stages.device.torch_device, models.transformer
    history, layouts = _history_and_layouts(settings, start, None)
    count, (_, _, _, h, w) = settings.sections, start.shape
    stages.begin(StageName.SAMPLING, 0, (transformer,))
    with ExitStack() as held:
        stages.lora = held.enter_context(_lora(transformer, lora_rank))
        held.enter_context(manager.use(transformer))
        for index, layout in enumerate(layouts):
            context = history.context(layout, first_section=index == 0)
            with _carried(stages):
                denoise = make_denoiser(transformer, cond, context, settings)
                for _ in range(passes):
                    x = torch.zeros(1, LATENT_CHANNELS, settings.window, h, w).to(meta)
                    x = _host(denoise(x, torch.ones(1).to(meta)))
                stages.hook(StageName.SAMPLING, models)
            x = torch.zeros(1, LATENT_CHANNELS, settings.window, h, w)
            if settings.mode == SamplingMode.INVERTED and index == count - 1:
                x = torch.cat([history.start, x], dim=2)
            history.add(x)
            vae_tiling = _decode(stages, models, settings, index, count, history.video(), vae_tiling)
            stages.begin(StageName.WRITING, index)
            if index + 1 < count:
                stages.begin(StageName.SAMPLING, index + 1, (transformer,))
    stages.out.vae_tiling = vae_tiling


def _decode(stages: _Stages, models, settings, index: int, count: int, latents: torch.Tensor,
            tiling: bool | None) -> bool | None:
    """generation.VideoPipeline.decode: the span, the tiling decided at the first decode, pixels to the host."""
    manager, vae = stages.manager, models.vae
    stages.begin(StageName.DECODING, index, (vae,))
    span = decode_span(index, count, settings.window, settings.mode)
    if span:
        latents = latents[:, :, :span] if settings.mode == SamplingMode.INVERTED else latents[:, :, -span:]
    with _carried(stages), manager.use(vae):
        if tiling is None:
            tiling = manager.short_of_room()
        set_vae_tiling(vae, tiling)
        scaled = latents / vae.config.scaling_factor
        # Tiles of one shape make the same tensors: each shape's decoder call and blend run once.
        with replayed(stages.live, vae.decoder), replayed(stages.live, vae, "blend_v"), \
                replayed(stages.live, vae, "blend_h"), replayed(stages.live, vae, "blend_t"):
            _host(vae.decode(scaled.to(device=stages.device.torch_device, dtype=vae.dtype)).sample.float())
        stages.hook(StageName.DECODING, models)
    return tiling


def _encode_prompt(models, meta) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """models/encoders.encode_prompt's device work for a prompt that fills the Llama encoder."""
    crop = models.spec.crop_start
    tokens = LLAMA_TOKENS + crop
    ids = torch.zeros(1, tokens, dtype=torch.long)
    out = models.text_encoder(input_ids=ids.to(meta), attention_mask=torch.ones_like(ids).to(meta),
                              output_hidden_states=True)
    features = out.hidden_states[-3][:, crop:tokens]
    embeds = features.new_zeros(1, PROMPT_LENGTH, features.shape[-1])
    embeds[:, :features.shape[1]] = features
    del out, features
    pooled = models.text_encoder_2(torch.zeros(1, CLIP_TOKENS, dtype=torch.long).to(meta)).pooler_output
    return _host(embeds), _prompt_mask(), _host(pooled)


def _prompt_mask() -> torch.Tensor:
    mask = torch.zeros(1, PROMPT_LENGTH, dtype=torch.bool)
    mask[:, :LLAMA_TOKENS] = True
    return mask


def _host(tensor: torch.Tensor) -> torch.Tensor:
    """The host copy a run's `.cpu()` makes: a real CPU tensor of the shape (the device's copy is let go)."""
    return torch.zeros(tensor.shape, dtype=tensor.dtype)


@contextmanager
def _lora(transformer, rank: int):
    """A LoRA of `rank` on every Linear of the blocks, through the app's own hook (models/lora.py)."""
    if not rank:
        yield []
        return
    handles, hooks = [], []
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and "blocks" in name:
            # Host matrices never read (moving them to the meta device reads nothing): no memory touched.
            down = torch.empty(rank, module.in_features)
            up = torch.empty(module.out_features, rank)
            hooks.append(LoraHook(down, up))
            handles.append(module.register_forward_hook(hooks[-1]))
    try:
        yield hooks
    finally:
        for handle in handles:
            handle.remove()


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """What SDPA's fused kernels make on a GPU: the output, and the log-sum-exp they keep per query."""
    out = query.new_empty(*query.shape[:-1], value.shape[-1])
    query.new_empty(*query.shape[:-1], dtype=torch.float32)  # the log-sum-exp: counted, then let go
    return out


@contextmanager
def _fused_attention():
    original = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _fused_sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
