"""`python app.py check`: the memory plan of a run, before any weight is read (framepack_core.memory_plan)."""
from __future__ import annotations

import json
import sys


def check_command(args) -> int:
    from framepack_core.memory_plan import plan_run

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
