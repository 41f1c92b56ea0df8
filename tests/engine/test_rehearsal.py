"""The full-size rehearsal: a 640 run of the published models, stage by stage, with shapes and no data
(framepack_core/rehearsal.py, memory/rehearsal.py, `app.py check --rehearse`)."""
import json
import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from framepack_core.engine.memory_plan import model_bytes, plan_run
from framepack_core.engine.rehearsal import CONTEXT_RESERVE_BYTES, rehearse
from memory import GiB
from memory.rehearsal import LiveBytes, MetaDevice, replayed
from memory.usage import StageUsage

ROOT = Path(__file__).resolve().parents[2]
RUN_ORDER = ["loading", "encoding_prompt", "encoding_image", "sampling", "decoding", "writing"]


def rows_by_stage(result):
    return {row.stage: row for row in result.rows}


def test_at_6_gib_every_stage_of_a_640_run_fits_the_budget_less_the_context():
    result = rehearse(vram_budget_gb=6, ram_budget_gb=32, seconds=1)  # one section
    assert [row.stage for row in result.rows] == RUN_ORDER
    assert result.limit_bytes == 6 * GiB - CONTEXT_RESERVE_BYTES and result.fits, result.problems
    assert all(row.not_carried is None and row.vram_peak_allocated <= result.limit_bytes for row in result.rows)
    assert {f.name for f in fields(StageUsage)} <= set(vars(result.rows[0]))  # a run's record["stages"] fields
    stage = rows_by_stage(result)
    prompt, sampling, decoding = stage["encoding_prompt"], stage["sampling"], stage["decoding"]
    # The device's buffers are the manager's plan, to the byte; activations come on top.
    assert sampling.weights_bytes + sampling.slots_bytes == sampling.planned_bytes
    assert sampling.slots_bytes > 0 and sampling.activation_bytes > 256 << 20  # it streams, and computes
    assert prompt.weights_bytes + prompt.slots_bytes == prompt.planned_bytes and prompt.activation_bytes > 0
    assert decoding.weights_bytes == model_bytes("vae", "framepack").total_bytes and result.vae_tiling is True
    assert sampling.pinned_bytes > 0 and sampling.bytes_streamed > 0  # pinned after two passes, as in a run
    assert stage["loading"].vram_peak_allocated == 0
    # check's whole-process prediction holds the largest stage with the context beside it.
    assert result.peak_bytes + CONTEXT_RESERVE_BYTES <= plan_run("framepack", 6, 32, 640, 1).peak_vram_bytes


@pytest.mark.parametrize("budget", [8, 12])
def test_at_8_and_12_gib_every_stage_fits_and_more_of_the_transformer_stays(budget):
    result = rehearse(vram_budget_gb=budget, ram_budget_gb=32, seconds=1, passes=1)
    assert result.fits, result.problems
    assert max(r.vram_peak_allocated for r in result.rows) <= budget * GiB - CONTEXT_RESERVE_BYTES
    sampling = rows_by_stage(result)["sampling"]
    assert sampling.weights_bytes + sampling.slots_bytes == sampling.planned_bytes
    assert sampling.weights_bytes > 1 * GiB  # at 6 GiB only the fixed part (285 MiB) stays


def test_a_tensor_left_on_the_device_between_stages_is_caught_and_named():
    kept = []

    def leak(models, device):  # a stage that keeps its output on the device, as a missing .cpu() would
        kept.append(torch.empty(3 * GiB, dtype=torch.uint8, device=device.torch_device))

    result = rehearse(vram_budget_gb=6, ram_budget_gb=32, seconds=1, passes=1, hooks={"encoding_prompt": leak})
    stage = rows_by_stage(result)
    assert stage["encoding_prompt"].left_bytes == 3 * GiB and not stage["encoding_prompt"].fits
    assert stage["sampling"].vram_peak_allocated > result.limit_bytes and not result.fits
    assert "encoding_prompt left 3.00 GiB on the device after it ended." in result.problems
    assert any(p.startswith("sampling (section 1) overruns") for p in result.problems)


def check(*args, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "app.py", "check", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_check_rehearse_at_4_gib_refuses_as_check_does_and_names_the_stage(tmp_path):
    plain = check("--vram-budget", "4", "--ram-budget", "16", "--json", tmp_path=tmp_path)
    rehearsed = check("--rehearse", "--vram-budget", "4", "--ram-budget", "16", "--json", tmp_path=tmp_path)
    assert plain.returncode == rehearsed.returncode == 2
    refusal = json.loads(plain.stdout.strip().splitlines()[-1])["problems"][0]
    result = json.loads(rehearsed.stdout.strip().splitlines()[-1])
    assert result["refusal"] == f"Stage encoding_prompt: {refusal}" and result["rows"] == [] and not result["fits"]
    assert "cannot run the text encoder (Llama)" in refusal


def test_a_replayed_call_reaches_the_peak_the_call_itself_reaches():
    conv = torch.nn.Conv3d(4, 64, 3, padding=1, device="meta")
    tiles = [torch.empty(1, 4, 3, 32, 32), torch.empty(1, 4, 3, 32, 32), torch.empty(1, 4, 3, 32, 8)]

    def peaks(replay: bool) -> list[int]:
        device = MetaDevice()
        out = []
        with LiveBytes(device) as live, torch.no_grad():
            with replayed(live, conv) if replay else nullcontext():
                for tile in tiles:
                    live.reset()
                    y = conv(tile.to("meta"))
                    out.append((live.peak.total, tuple(y.shape)))
        return out

    direct, replay = peaks(False), peaks(True)
    assert direct == replay
    assert direct[0][0] == (4 * 3 * 32 * 32 + 64 * 3 * 32 * 32) * 4  # the input moved over, and the output


def test_live_bytes_count_a_storage_once_and_let_it_go_when_collected():
    device = MetaDevice()
    with LiveBytes(device) as live:
        x = torch.empty(1024, dtype=torch.float32, device="meta")
        views = [x.view(32, 32), x[:512], x.reshape(1024)]
        assert live.live == 4096
        del x
        assert live.live == 4096  # the views keep it
        del views
        assert live.live == 0 and live.peak.total == 4096
        buffer = device.alloc(1 << 20)  # the ledger's buffers are the device's, not activations
        assert live.live == 0 and live.peak.total == (1 << 20)
        del buffer


def test_a_lora_adds_its_matrices_to_the_sampling_stage_and_keeps_them_for_the_run_without_a_leak():
    from framepack_core.engine.rehearsal import _models

    linears = [m for n, m in _models("framepack").transformer.named_modules()
               if isinstance(m, torch.nn.Linear) and "blocks" in n]
    lora_bytes = sum(64 * (m.in_features + m.out_features) * 2 for m in linears)  # bf16 on the device
    result = rehearse(vram_budget_gb=6, ram_budget_gb=32, seconds=1, passes=1, lora_rank=64)
    sampling = rows_by_stage(result)["sampling"]
    assert result.fits, result.problems  # 715 MiB of LoRA still fits 6 GiB at 640
    assert sampling.activation_bytes >= lora_bytes > 700 << 20
    assert sampling.left_bytes < 64 << 20  # held by the hooks for every section by design, not a leak
