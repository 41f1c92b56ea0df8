"""`python app.py check`: the memory plan of a run, before any weight is read (framepack_core.engine.memory_plan)."""
from __future__ import annotations

import json
import sys


def check_command(args) -> int:
    if getattr(args, "rehearse", False):
        return rehearse_command(args)
    from framepack_core.engine.memory_plan import plan_run

    try:
        plan = plan_run(args.model, args.vram_budget, args.ram_budget, args.resolution, args.seconds, args.fp8,
                        models_dir=args.models_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print("\n".join(plan.lines()))
    else:
        print(json.dumps(plan.as_dict()))
    return 0 if plan.fits else 2


def rehearse_command(args) -> int:
    """`check --rehearse`: the run's stages at full size with no data (framepack_core.engine.rehearsal)."""
    from framepack_core.engine.rehearsal import rehearse, rehearsal_budget_gb

    if args.fp8 not in ("off", False, None):
        print("error: --rehearse covers --fp8 off only: the FP8 weights' conversion has not been rehearsed yet.",
              file=sys.stderr)
        return 2
    try:
        result = rehearse(args.model, rehearsal_budget_gb(args.vram_budget), args.ram_budget, args.resolution,
                          args.seconds, vae_tiling=_tiling(args.vae_tiling))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict()) if args.json else "\n".join(result.lines()))
    return 0 if result.fits else 2


def _tiling(word) -> bool | None:
    """--vae-tiling's word as the run takes it (auto: the memory manager decides at the first decode)."""
    from framepack_core.settings import SETTINGS

    values = SETTINGS["vae_tiling"].flag_values
    return values.get(word, word) if isinstance(word, str) else word
