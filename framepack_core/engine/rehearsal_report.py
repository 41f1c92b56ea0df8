"""What a rehearsal reports (engine/rehearsal.py): one row per stage, as a run's record["stages"] has
them, beside the budget less the CUDA context; the fixed paths it took where values were needed; the verdict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from memory import size_text

from .memory_plan import TYPICAL_CONTEXT_BYTES

# What the CUDA context takes outside the allocator, beside the budget's weights and activations.
# The GPU session measures it (bench/gpu/full_set.py `context_bytes`); until then CUDA 12's typical size.
CONTEXT_RESERVE_BYTES = TYPICAL_CONTEXT_BYTES
# What a stage may leave on the device for the next: the sampler holds a section's conditioning on the
# device while that section decodes (run_sections' denoiser, 9.3 MiB at 640). More is a leak.
LEFT_TOLERANCE_BYTES = 64 << 20

FIXED_PATHS = (
    "step cache: off, every block of every step computed (its skip decisions read values)",
    "two transformer steps per section (cfg > 1: two calls each): the streamer pins its blocks after two "
    "passes (memory/swap.py), and every later step makes the same tensors",
    "prompt: one filling Llama's 256 tokens (the longest; a shorter one makes less), and a square picture",
    "attention: a fused kernel's output and log-sum-exp, as SDPA's flash and memory-efficient kernels on a "
    "GPU (the math path the meta device would take holds the whole attention matrix)",
    "previews: not made (they read x0's values on the host, after the step)",
    "writing: the MP4 and the latents file are not written (no values); a decode's pixels go to the host as in a run",
)


@dataclass
class StageRow:
    # A run's record["stages"] fields (memory/usage.py StageUsage), same names and units.
    stage: str
    section: int | None
    seconds: float | None
    vram_peak_allocated: int  # the peak of live device bytes: weights + slots + activations
    vram_peak_reserved: int | None
    bytes_streamed: int
    rss_anon_peak: int | None
    pinned_bytes: int
    planned_bytes: int | None
    # The rehearsal's own.
    weights_bytes: int = 0  # at the peak: fixed parts and resident blocks
    slots_bytes: int = 0  # at the peak: streaming slots
    activation_bytes: int = 0  # at the peak: everything else
    peak_op: str = ""
    mapped_bytes: int = 0  # host copies of the placed models left in their mapped files
    left_bytes: int = 0  # activations it made that are still on the device when it ended
    limit_bytes: int = 0  # the VRAM budget less CONTEXT_RESERVE_BYTES
    not_carried: str | None = None  # the op that could not run without data

    @property
    def fits(self) -> bool:
        return (self.not_carried is None and self.vram_peak_allocated <= self.limit_bytes
                and self.left_bytes <= LEFT_TOLERANCE_BYTES)


@dataclass
class Rehearsal:
    model_set: str
    vram_budget_bytes: int
    resolution: int
    seconds: float
    height: int
    width: int
    vae_tiling: bool | None  # what the decodes used
    plan_peak_vram_bytes: int  # check's prediction for the whole process (context included)
    limit_bytes: int
    rows: list[StageRow] = field(default_factory=list)
    refusal: str | None = None  # as check refuses, with the stage named
    fixed_paths: tuple[str, ...] = FIXED_PATHS
    answered: list[str] = field(default_factory=list)  # the data-dependent reads, and what they were told

    @property
    def problems(self) -> list[str]:
        """One sentence per stage that overran, leaked or could not be carried."""
        if self.refusal:
            return [self.refusal]
        out = []
        for r in self.rows:
            where = r.stage + (f" (section {r.section + 1})" if r.section is not None else "")
            if r.not_carried:
                out.append(f"{where} could not be rehearsed: {r.not_carried}")
            elif r.vram_peak_allocated > r.limit_bytes:
                out.append(f"{where} overruns: {size_text(r.vram_peak_allocated)} on the device at its peak, "
                           f"{size_text(r.limit_bytes)} allowed (at {r.peak_op}).")
            if r.left_bytes > LEFT_TOLERANCE_BYTES:
                out.append(f"{where} left {size_text(r.left_bytes)} on the device after it ended.")
        return out

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def peak_bytes(self) -> int:
        return max((r.vram_peak_allocated for r in self.rows), default=0)

    def as_dict(self) -> dict:
        return asdict(self) | {"fits": self.fits, "problems": self.problems, "peak_bytes": self.peak_bytes,
                               "rows": [asdict(r) | {"fits": r.fits} for r in self.rows]}

    def lines(self) -> list[str]:
        out = [f"Rehearsal of {self.model_set} at {self.resolution} ({self.height}x{self.width}), {self.seconds:g} s, "
               f"VRAM budget {size_text(self.vram_budget_bytes)}: each stage's peak must stay under "
               f"{size_text(self.limit_bytes)} (the budget less {size_text(CONTEXT_RESERVE_BYTES)} for the CUDA context)."]
        if self.refusal:
            return out + [f"Refused: {self.refusal}"]
        out.append(f"  {'stage':18s} {'peak':>10s} {'weights':>10s} {'slots':>10s} {'activations':>12s} "
                   f"{'planned':>10s} {'pinned':>10s} {'mapped':>10s}  ")
        for r in self.rows:
            name = r.stage + (f" {r.section + 1}" if r.section is not None else "")
            planned = size_text(r.planned_bytes) if r.planned_bytes is not None else "-"
            out.append(f"  {name:18s} {size_text(r.vram_peak_allocated):>10s} {size_text(r.weights_bytes):>10s} "
                       f"{size_text(r.slots_bytes):>10s} {size_text(r.activation_bytes):>12s} {planned:>10s} "
                       f"{size_text(r.pinned_bytes):>10s} {size_text(r.mapped_bytes):>10s}  "
                       f"{'fits' if r.fits else 'DOES NOT FIT'}")
        out.append(f"Largest stage: {size_text(self.peak_bytes)}; check's plan: {size_text(self.plan_peak_vram_bytes)} "
                   f"for the whole process ({size_text(CONTEXT_RESERVE_BYTES)} context included). Decodes "
                   f"{'tiled' if self.vae_tiling else 'untiled'}.")
        out += ["Fixed paths (values a rehearsal has not):"] + [f"  {p}" for p in self.fixed_paths]
        out += [f"  data-dependent reads answered: {', '.join(self.answered)}"] if self.answered else []
        out += ["Every stage fits."] if self.fits else ["Problems:"] + [f"  {p}" for p in self.problems]
        return out
