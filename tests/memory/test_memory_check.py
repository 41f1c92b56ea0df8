"""`python app.py check`: the real set's plan from its published configuration, refused when it cannot fit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framepack_core.engine.memory_plan import model_bytes, plan_run
from memory import GiB

ROOT = Path(__file__).resolve().parents[2]


def check(*args, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    env.pop("FRAMEPACK_MODELS_DIR", None)
    return subprocess.run([sys.executable, "app.py", "check", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_six_gb_and_sixteen_gb_plan_a_640_run_inside_both_budgets(tmp_path):
    done = check("--model", "framepack", "--vram-budget", "6", "--ram-budget", "16", "--json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    assert plan["fits"] and plan["resolution"] == 640 and not plan["problems"]
    assert plan["peak_vram_bytes"] <= 6 * GiB and plan["peak_ram_bytes"] <= 16 * GiB
    t = next(m for m in plan["models"] if m["key"] == "transformer")
    assert t["blocks"] == 62  # 20 double, 40 single and the 2 refiner blocks of the published config
    assert t["streamed_from_pinned"] > 0 and t["streamed_from_disk"] > 0
    assert t["resident_blocks"] + t["pinned_blocks"] + t["mapped_blocks"] == t["blocks"]
    assert 23 * GiB < t["total_bytes"] < 26 * GiB  # the published 25.7 GB (decimal) transformer in bf16
    assert not plan["weights_present"] and plan["disk_needed_bytes"] == plan["weights_bytes"]
    text = check("--vram-budget", "6", "--ram-budget", "16", tmp_path=tmp_path)
    assert text.returncode == 0 and "fits both budgets" in text.stdout and "streamed from pinned RAM" in text.stdout


def test_a_one_gb_card_is_refused_with_what_to_change(tmp_path):
    done = check("--vram-budget", "1", "--ram-budget", "16", tmp_path=tmp_path)
    assert done.returncode == 2
    assert "Does not fit" in done.stdout and "raise the VRAM budget to at least 5.5 GiB, or lower the resolution." in done.stdout


def test_too_little_ram_is_refused(tmp_path):
    done = check("--vram-budget", "6", "--ram-budget", "2", tmp_path=tmp_path)
    assert done.returncode == 2 and "raise --ram-budget" in done.stdout


def test_more_ram_pins_more_and_streams_less_from_disk():
    small, large = plan_run("framepack", 6, 12), plan_run("framepack", 6, 32)
    ts, tl = small.model("transformer"), large.model("transformer")
    assert tl.streamed_from_pinned > ts.streamed_from_pinned and tl.streamed_from_disk < ts.streamed_from_disk
    assert small.peak_ram_bytes <= 12 * GiB and large.peak_ram_bytes <= 32 * GiB
    assert plan_run("framepack", 12, 16).model("transformer").resident_blocks > ts.resident_blocks


def test_fp8_halves_the_streamed_block_bytes():
    bf16 = model_bytes("transformer", "framepack", False).block_bytes
    fp8 = model_bytes("transformer", "framepack", True).block_bytes
    assert 0.5 < sum(fp8) / sum(bf16) < 0.52  # linear weights at one byte; norms and biases stay bf16
    plan = plan_run("framepack", 6, 16, fp8="storage")
    assert plan.fits and plan.disk_needed_bytes >= sum(bf16) - sum(fp8)


def test_check_takes_fp8_as_generate_does_and_plans_fp8_weights_for_storage_and_fast(tmp_path):
    off, storage, fast = (plan_run("framepack", 6, 16, fp8=mode) for mode in ("off", "storage", "fast"))
    sizes = [m.total_bytes for m in storage.models]
    assert [m.total_bytes for m in fast.models] == sizes  # fast multiplies in FP8: the same FP8 weights
    assert off.model("transformer").total_bytes > 1.9 * storage.model("transformer").total_bytes
    assert (off.fp8, storage.fp8, fast.fp8) == ("off", "storage", "fast")
    assert storage.lines()[0].startswith("Model set framepack, 640 bucket, 5 s, FP8 transformer (storage): ")
    assert plan_run("framepack", 6, 16, fp8=True).fp8 == "storage"  # a record's true, as generate reads it
    with pytest.raises(ValueError, match="FP8 must be one of off, storage, fast, not 'half'"):
        plan_run("framepack", 6, 16, fp8="half")
    done = check("--fp8", "--vram-budget", "6", "--ram-budget", "16", "--json", tmp_path=tmp_path)  # alone: storage
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    t = next(m for m in plan["models"] if m["key"] == "transformer")
    assert plan["fp8"] == "storage" and t["total_bytes"] == storage.model("transformer").total_bytes
    wrong = check("--fp8", "half", tmp_path=tmp_path)
    assert wrong.returncode == 2 and "argument --fp8: invalid choice: 'half'" in wrong.stderr


def test_check_rejects_the_tiny_set(tmp_path):
    with pytest.raises(ValueError):
        plan_run("tiny")
    assert check("--model", "tiny", tmp_path=tmp_path).returncode == 2  # argparse: not a choice


def test_the_page_line_says_the_same_plan():
    from ui.layout import memory_plan_line

    line = memory_plan_line("framepack", 6, 640)
    assert line.startswith("Memory plan (640): ") and "transformer blocks on the GPU" in line
    assert "does not fit" in memory_plan_line("framepack", 1, 640)
    assert memory_plan_line("tiny", 6, 640) == ""


@pytest.mark.parametrize("streams", [True, False])
def test_what_check_plans_is_what_the_manager_places(tiny_models, picture, tmp_path, streams):
    """The run's memory plan (plan_stages, what `check` prints) against what the manager then placed."""
    from framepack_core.events import Finished
    from framepack_core.engine.memory_plan import make_manager, memory_terms, model_plan, plan_stages, transformer_width
    from framepack_core.models.loading import load_models
    from tests.support.helpers import run_events, tiny_request
    from memory import SimulatedDevice, model_sizes

    models = load_models("tiny")  # a private copy: placing repacks the weights
    # A prompt of its own: one the prompt cache holds would never bring the text encoders to the device.
    request = tiny_request(picture, steps=2, crf=0, prompt=f"the plan is what is placed ({streams})")
    keys = ("text_encoder", "text_encoder_2", "image_encoder", "vae", "transformer")
    sizes = {key: model_sizes(getattr(models, key)) for key in keys}
    width = transformer_width(models.transformer.config)
    reserve = memory_terms(0, 128, request.method.window, width).reserve_bytes
    t = sizes["transformer"]
    # The transformer's fixed part and two slots (it streams), or room for it whole twice over.
    vram = reserve + (t.other_bytes + 2 * max(t.block_bytes) if streams else 2 * t.total_bytes)
    terms = memory_terms(vram, 128, request.method.window, width, ram_bytes=64 * GiB)
    planned = plan_stages(sizes, terms)
    device = SimulatedDevice()
    manager = make_manager(device, vram / GiB, models, request, ram_budget_gb=64 * GiB / GiB)
    assert (manager.terms.budget_bytes, manager.terms.reserve_bytes) == (terms.budget_bytes, terms.reserve_bytes)
    manager.ram_budget_bytes = terms.ram_bytes
    finished = run_events(request, models, tmp_path / "v.mp4", manager)[-1]
    assert isinstance(finished, Finished), finished
    assert not planned.short and set(planned.models) == set(keys)
    for key in keys:
        placed = manager.planned(getattr(models, key))
        assert placed == planned.models[key], key
        assert model_plan(key, sizes[key], placed) == model_plan(key, sizes[key], planned.models[key])
    assert planned.models["transformer"].device.streams == streams and device.peak_bytes <= vram - reserve


def test_check_at_four_gib_lists_every_model_in_gib_and_no_peak_that_fits(tmp_path):
    """Issue 27, finding 12: the help offers only what check plans, a budget too small lists every model
    (none hidden), gives no "Predicted peak" under the budget before "Does not fit", and speaks GiB only."""
    helped = check("--help", tmp_path=tmp_path).stdout
    assert "tiny" not in helped and "{framepack,framepack-f1}" in helped and " GB" not in helped
    done = check("--vram-budget", "4", "--ram-budget", "16", tmp_path=tmp_path)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    listed = [line.split("  ")[1].strip() for line in lines[1:6]]
    assert listed == ["text encoder (Llama)", "text encoder (CLIP-L)", "image encoder (SigLIP)", "VAE", "transformer"]
    assert "cannot be placed" in lines[1] and "cannot be placed" in lines[5]
    peak = next(line for line in lines if line.startswith("Predicted peak"))
    assert "VRAM" not in peak.split(";")[0].replace("VRAM budget", "") and "none" in peak
    assert " GB" not in done.stdout and "at least 5.5 GiB" in done.stdout
