"""Issue 17's GPU criteria, read from bench/gpu/gpu_session.sh's results.jsonl: each figure, its limit, and
whether it holds (None where a step did not run or a figure is missing).

    python bench/gpu/gpu_verdict.py $OUT/results.jsonl

The last stdout line is JSON.
"""
from __future__ import annotations

import json
import sys

GiB = 1 << 30


def _results(path: str) -> dict[str, dict]:
    steps = {}
    for line in open(path, encoding="utf-8"):
        if line.strip():
            entry = json.loads(line)
            result = entry.get("result") or {}
            if not result and not entry.get("skipped"):  # it ran and printed nothing: killed, or crashed
                result = {"status": "no result", "returncode": entry.get("rc")}
            steps[entry["step"]] = result
    return steps


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _at_most(value, limit):
    return None if value is None else value <= limit


def _finished(run: dict) -> bool | None:
    """None where the step did not run; else whether the run finished (not failed, refused or cut short)."""
    return None if not run else run.get("status") == "finished" and run.get("returncode") in (0, None)


def _held(finished: bool | None, value, limit) -> bool | None:
    """A memory criterion: it holds only for a finished run (a failed or cut run's peak proves nothing);
    None where the step did not run or the figure cannot be read here (no NVIDIA card)."""
    if finished is None or (finished and value is None):
        return None
    return bool(finished) and value <= limit


def _memory(run: dict, budget_gib: float, ram_gib: float) -> dict:
    card = run.get("card_peak_over_baseline_bytes")
    finished = _finished(run)
    host = None
    if run.get("rss_anon_peak_bytes") is not None:
        # Pinned buffers are shared memory (RssShmem), not RssAnon: the process's own RAM is their sum.
        host = run["rss_anon_peak_bytes"] + (run.get("pinned_bytes_peak") or 0)
    plan = run.get("check") or {}
    rehearsal = run.get("rehearsal") or {}
    rehearsed = predicted = rehearsal.get("peak_bytes")
    if predicted is not None:
        predicted += rehearsal.get("context_reserve_bytes") or 0  # NVML counts the CUDA context too
    return {"status": run.get("status"), "finished": finished, "out_of_memory": run.get("out_of_memory"),
            "card_peak_gib": card and round(card / GiB, 3),
            "card_within_budget": _held(finished, card, budget_gib * GiB),
            "rss_anon_plus_pinned_gib": host and round(host / GiB, 3),
            "ram_within_budget": _held(finished, host, ram_gib * GiB),
            "pinned_bytes_known": run.get("pinned_bytes_peak") is not None,
            "check_vram_over_measured": _ratio(plan.get("peak_vram_bytes"), card) if finished else None,
            "check_ram_over_measured": _ratio(plan.get("peak_ram_bytes"), host) if finished else None,
            # NVML's peak against the full-size rehearsal of the same settings (check --rehearse).
            "rehearsal_peak_gib": predicted and round(predicted / GiB, 3),
            "rehearsal_over_measured": _ratio(predicted, card) if finished else None,
            # What the card held beyond the rehearsed tensors: the CUDA context and the allocator's slack,
            # the measure of framepack_core/rehearsal.py's CONTEXT_RESERVE_BYTES.
            "card_beyond_rehearsal_bytes": card - rehearsed if finished and card and rehearsed else None}


def _within_tenth(ratios: list) -> bool | None:
    return None if not ratios or None in ratios else all(abs(r - 1) <= 0.10 for r in ratios)


REFUSAL = "cannot run the"  # the words of check's and the manager's refusal (framepack_core/memory_plan.refusal)


def _cap(run: dict, cap_gib: float) -> dict:
    """A run at a small cap: it finishes within it, or it refuses up front with the budget's sentence. An
    out-of-memory error in the middle of a run is neither, nor is a traceback or a run cut short."""
    card = run.get("card_peak_over_baseline_bytes")
    error = run.get("error") or ""
    finished = _held(_finished(run), card, cap_gib * GiB)  # None: finished, on no card that can be read
    refused = (run.get("status") == "failed" and REFUSAL in error and not run.get("traceback")
               and not run.get("out_of_memory"))
    return {"status": run.get("status"), "error": run.get("error"), "traceback": run.get("traceback"),
            "out_of_memory": run.get("out_of_memory"), "refused": bool(refused) if run else None,
            "card_peak_gib": card and round(card / GiB, 3),
            "ok": None if not run or (finished is None and not refused) else bool(finished or refused)}


def verdict(steps: dict[str, dict]) -> dict:
    one, free, five = (steps.get(name, {}) for name in ("run_1s_6gb", "run_1s_free", "run_5s_6gb"))
    memory = {name: _memory(run, 6.0, 16.0) for name, run in (("run_1s_6gb", one), ("run_5s_6gb", five)) if run}
    modes = steps.get("gpu_report", {}).get("modes", {})
    streamed = _ratio(modes.get("stream_6gb_pinned", {}).get("seconds_per_step"),
                      modes.get("resident", {}).get("seconds_per_step"))
    both = _finished(one) and _finished(free)  # a ratio of a cut run's seconds says nothing
    whole = _ratio(one.get("seconds_run"), free.get("seconds_run")) if both else None
    return {
        **memory,
        "check_vram_within_10_percent": _within_tenth([m["check_vram_over_measured"] for m in memory.values()]),
        "check_ram_within_10_percent": _within_tenth([m["check_ram_over_measured"] for m in memory.values()]),
        "rehearsal_within_10_percent": _within_tenth([m["rehearsal_over_measured"] for m in memory.values()]),
        "seconds_per_step_streamed_over_resident": streamed, "streamed_ok": _at_most(streamed, 1.10),
        "app_seconds_per_step_6gb_over_free": _ratio(one.get("seconds_per_step"), free.get("seconds_per_step"))
        if both else None,
        "whole_run_6gb_over_free": whole, "whole_run_ok": _at_most(whole, 1.25),
        "cap_4gib": _cap(steps.get("run_1s_4gb", {}), 4.0),
        # The app's expandable segments (run_1s_6gb) against torch's default allocator (alloc_plain).
        "allocator_card_peak_gib": {"expandable_segments": _memory(one, 6.0, 16.0)["card_peak_gib"],
                                    "torch_default": _memory(steps.get("alloc_plain", {}), 6.0, 16.0)["card_peak_gib"]},
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/gpu/gpu_verdict.py RESULTS.jsonl", file=sys.stderr)
        return 2
    print(json.dumps(verdict(_results(argv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
