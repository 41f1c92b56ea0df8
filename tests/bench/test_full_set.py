"""bench/gpu/full_set.py's pieces: the stand-in's files as the app's loader reads them, its folder layout,
and the terminal's line per section that it reads seconds per step from. (The whole bench, build
and run, is `python bench/gpu/full_set.py --dir DIR --layers 1 --resolution 128 --steps 2`: minutes on a
CPU, too long for the suite.)"""
from __future__ import annotations

import importlib.util
import io
import json
import os

import pytest
import torch
from safetensors import safe_open

from bench.gpu import full_set
from bench.support.sharded_fill import Pattern, shard_names, write_sharded
from framepack_core.models.loading import _load_component, _local_roots
from framepack_core.models.published import meta_model, published
from framepack_core.models.sets import MODEL_SPECS

SPEC = MODEL_SPECS["framepack"]


def test_a_model_written_with_fewer_layers_loads_mapped_at_its_published_width(tmp_path):
    root = tmp_path / "hunyuanvideo-community" / "HunyuanVideo"
    written = full_set._write_model("text_encoder_2", SPEC, root / "text_encoder_2", 1, Pattern())
    assert sorted(p.name for p in (root / "text_encoder_2").iterdir()) == ["config.json", "model.safetensors"]
    model = _load_component("text_encoder_2", SPEC, root, lambda message: None)
    config, expected = model.config, published("text_encoder_2").config
    assert config.num_hidden_layers == 1
    assert (config.hidden_size, config.vocab_size, config.intermediate_size) == (
        expected["hidden_size"], expected["vocab_size"], expected["intermediate_size"])
    assert model.mapped_files  # pointed into the file, not read by from_pretrained
    params = dict(model.named_parameters())
    assert written == (root / "text_encoder_2" / "model.safetensors").stat().st_size
    assert written > sum(p.numel() * 2 for p in params.values())  # all of it, in float16
    assert all(p.dtype == torch.float16 and torch.isfinite(p).all() for p in params.values())
    named = lambda suffix: next(p for n, p in params.items() if n.endswith(suffix)).float()  # noqa: E731
    scale = named("final_layer_norm.weight")
    assert 0.9 < scale.mean() < 1.1 and scale.std() > 0.005  # a norm's scale sits near 1
    weight = named("layers.0.mlp.fc1.weight")
    assert 0.015 < weight.std() < 0.025 and abs(weight.mean()) < 0.002
    assert not torch.equal(weight[0], weight[1])  # rows differ: not one value repeated
    with safe_open(root / "text_encoder_2" / "model.safetensors", "pt") as file:
        assert set(file.keys()) == set(model.state_dict())


def test_shards_are_named_and_indexed_as_the_hub_has_them(tmp_path):
    model = meta_model("transformer", "tiny")
    state = model.state_dict()
    write_sharded(tmp_path, "diffusion_pytorch_model", state, 3, Pattern())
    names = shard_names("diffusion_pytorch_model", 3)
    assert names[0] == "diffusion_pytorch_model-00001-of-00003.safetensors"
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    for name in names:
        with safe_open(tmp_path / name, "pt") as shard:
            keys = set(shard.keys())
            assert keys and keys == {k for k, file in index["weight_map"].items() if file == name}
            for key in keys:
                tensor = shard.get_tensor(key)
                assert tensor.shape == state[key].shape and tensor.dtype == state[key].dtype
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == names


@pytest.mark.skipif(any(importlib.util.find_spec(n) is None for n in ("llama_models", "open_clip"))
                    and os.environ.get("CI", "").lower() != "true",
                    reason="the vocabularies: pip install --no-deps -r requirements-dev-nodeps.txt")
def test_the_layout_is_what_models_dir_expects_and_a_build_is_reused(tmp_path, monkeypatch):
    weights = {}

    def fake_weights(key, spec, folder, layers, pattern):  # the weights are the test above's
        folder.mkdir(parents=True, exist_ok=True)
        weights[key] = folder
        return 0

    monkeypatch.setattr(full_set, "_write_model", fake_weights)
    built = full_set.build(tmp_path, "framepack", 1)
    assert built["reused"] is False
    assert weights == {key: tmp_path / s.repo_id / (s.subfolder or "") for key, s in SPEC.sources.items()
                       if key not in ("tokenizer", "tokenizer_2", "feature_extractor")}
    roots = _local_roots(SPEC, tmp_path)  # every repository and subfolder is there
    tokenizer = _load_component("tokenizer", SPEC, roots["hunyuanvideo-community/HunyuanVideo"], lambda m: None)
    assert tokenizer("a cat walks", add_special_tokens=False).input_ids == [64, 8415, 23291]
    processor = _load_component("feature_extractor", SPEC, roots["lllyasviel/flux_redux_bfl"], lambda m: None)
    assert processor.size == {"height": 384, "width": 384}
    assert full_set.build(tmp_path, "framepack", 1)["reused"] is True
    with pytest.raises(SystemExit, match="did not write"):
        foreign = tmp_path / "elsewhere"
        (foreign / "something").mkdir(parents=True)
        full_set.build(foreign, "framepack", 1)


def test_seconds_per_step_come_from_the_terminals_line_per_section():
    from framepack_core.events import Preview, Stage, Step
    from ui.cli import TerminalProgress

    log = io.StringIO()  # not a terminal
    progress = TerminalProgress(log)
    for section in range(2):
        progress(Stage("sampling", f"Sampling section {section + 1} of 2"))
        for step in range(1, 4):
            progress(Step(section, 2, step, 3))
            progress(Preview(section, step, image=None))
    found = full_set.section_lines(log.getvalue())
    assert [(s["section"], s["steps"]) for s in found] == [(1, 3), (2, 3)]
    assert all(s["seconds"] >= 0 for s in found) and len(log.getvalue().splitlines()) == 2


def test_the_verdict_reads_each_criterion_from_the_sessions_results(tmp_path):
    from bench.gpu.gpu_verdict import main, verdict

    GiB = 1 << 30

    def run(card_gib, seconds_run, per_step, status="finished", **extra):
        return {"status": status, "card_peak_over_baseline_bytes": int(card_gib * GiB), "seconds_run": seconds_run,
                "seconds_per_step": per_step, "rss_anon_peak_bytes": 2 * GiB, "pinned_bytes_peak": 12 * GiB,
                "check": {"peak_vram_bytes": int(5.7 * GiB), "peak_ram_bytes": int(14.5 * GiB)}, **extra}

    steps = {"run_1s_6gb": run(5.5, 24.0, 1.10), "run_1s_free": run(40, 20.0, 1.05),
             "run_5s_6gb": run(5.9, 110.0, 1.09),
             "run_1s_4gb": {"status": "failed", "traceback": False,
                            "error": "A VRAM budget of 4.00 GiB cannot run the text encoder (Llama): ... lower the resolution."},
             "gpu_report": {"modes": {"resident": {"seconds_per_step": 1.0}, "stream_6gb_pinned": {"seconds_per_step": 1.2}}}}
    found = verdict(steps)
    assert found["run_1s_6gb"]["card_within_budget"] is True and found["run_1s_6gb"]["rss_anon_plus_pinned_gib"] == 14.0
    assert found["run_1s_6gb"]["ram_within_budget"] is True
    assert found["check_vram_within_10_percent"] is True  # 5.7 against 5.5 and 5.9
    assert found["check_ram_within_10_percent"] is True  # 14.5 against 14
    assert found["whole_run_6gb_over_free"] == 1.2 and found["whole_run_ok"] is True
    assert found["seconds_per_step_streamed_over_resident"] == 1.2 and found["streamed_ok"] is False
    assert found["cap_4gib"]["ok"] is True  # refused up front, with a message
    steps["run_1s_4gb"] = run(4.5, 30.0, 1.2)  # finished, but over its cap
    steps["run_5s_6gb"] = run(6.2, 110.0, 1.09)
    found = verdict(steps)
    assert found["cap_4gib"]["ok"] is False and found["run_5s_6gb"]["card_within_budget"] is False
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"step": k, "rc": 0, "result": v}) + "\n" for k, v in steps.items()))
    assert main([str(results)]) == 0
