"""LoRA: three file formats made for the tiny transformer, against weights merged by hand; switching
without drift; with streaming and FP8; bad files refused with nothing written."""
import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from framepack_core.events import Failed, Finished, SectionDone, Step
from framepack_core.media.latents import load_latents
from framepack_core.models.lora import applied_loras
from framepack_core.models.lora_files import check_lora
from framepack_core.request import Request
from tests.support.helpers import executed, run_events, tiny_request
from tests.support.mp4info import mp4_info
from framepack_core.starts import Resume, begin

ROOT = Path(__file__).resolve().parents[2]
RANK, INNER, MLP = 4, 32, 128  # the tiny transformer: 2 heads x 16, MLP 4x


def _delta_pairs(seed: int = 1) -> dict:
    """One LoRA, as (down, up) per fused layer of the original HunyuanVideo naming (scale included)."""
    g = torch.Generator().manual_seed(seed)

    def pair(out_features, in_features=INNER):
        return (torch.randn(RANK, in_features, generator=g) * 0.3, torch.randn(out_features, RANK, generator=g) * 0.3)

    return {"double_blocks.0.img_attn_qkv": pair(3 * INNER), "double_blocks.1.txt_attn_qkv": pair(3 * INNER),
            "double_blocks.1.img_mlp.fc1": pair(MLP), "single_blocks.0.linear1": pair(3 * INNER + MLP),
            "single_blocks.1.linear2": pair(INNER, INNER + MLP)}


def _as_diffusers_layers(pairs: dict) -> dict:
    """The same LoRA split into the diffusers layers it changes (what a hand merge adds to)."""
    out = {}
    for name, (down, up) in pairs.items():
        kind, index, leaf = name.split(".", 2)
        if leaf == "img_attn_qkv":
            targets = [f"transformer_blocks.{index}.attn.{t}" for t in ("to_q", "to_k", "to_v")]
        elif leaf == "txt_attn_qkv":
            targets = [f"transformer_blocks.{index}.attn.{t}" for t in ("add_q_proj", "add_k_proj", "add_v_proj")]
        elif leaf == "linear1":
            targets = [f"single_transformer_blocks.{index}.{t}" for t in ("attn.to_q", "attn.to_k", "attn.to_v",
                                                                          "proj_mlp")]
        elif leaf == "img_mlp.fc1":
            targets = [f"transformer_blocks.{index}.ff.net.0.proj"]
        else:
            targets = [f"single_transformer_blocks.{index}.proj_out"]
        sizes = [INNER] * 3 + [MLP] if leaf == "linear1" else [up.shape[0] // len(targets)] * len(targets)
        for target, part in zip(targets, torch.split(up, sizes)):
            out[target] = (down, part)
    return out


def write_lora(path: Path, fmt: str, seed: int = 1) -> Path:
    pairs = _delta_pairs(seed)
    tensors = {}
    if fmt == "hunyuan":
        for name, (down, up) in pairs.items():
            tensors[f"diffusion_model.{name}.lora_A.weight"] = down
            tensors[f"diffusion_model.{name}.lora_B.weight"] = up
    elif fmt == "musubi":  # alpha 2 at rank 4: the stored up matrix is twice what applies
        for name, (down, up) in pairs.items():
            key = "lora_unet_" + name.replace(".", "_")
            tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up * 2,
                        f"{key}.alpha": torch.tensor(2.0)}
    else:
        for name, (down, up) in _as_diffusers_layers(pairs).items():
            tensors[f"transformer.{name}.lora_A.weight"] = down
            tensors[f"transformer.{name}.lora_B.weight"] = up.contiguous()
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(path))
    return path


def merged_models(models, weight: float, seed: int = 1):
    """The tiny set with a transformer whose weights got `weight * up @ down` added by hand."""
    transformer = copy.deepcopy(models.transformer)
    layers = dict(transformer.named_modules())
    with torch.no_grad():
        for name, (down, up) in _as_diffusers_layers(_delta_pairs(seed)).items():
            layers[name].weight += weight * (up @ down)
    return dataclasses.replace(models, transformer=transformer)


def made(models, picture, path, **fields) -> tuple[np.ndarray, torch.Tensor]:
    """The frames of one run (as ints) and its latents."""
    events = run_events(tiny_request(picture, **(dict(steps=2, crf=0, step_cache=False) | fields)), models, path)
    assert isinstance(events[-1], Finished), events[-1]
    return mp4_info(events[-1].video)[1].astype(int), load_latents(path.with_suffix(".latents.safetensors")).video


def frames(models, picture, path, **fields):
    return made(models, picture, path, **fields)[0]


@pytest.fixture(scope="module")
def base_made(tiny_models, picture, tmp_path_factory):
    return made(tiny_models, picture, tmp_path_factory.mktemp("base") / "base.mp4")


@pytest.fixture(scope="module")
def base_frames(base_made):
    return base_made[0]


@pytest.fixture(scope="module")
def merged_made(tiny_models, picture, tmp_path_factory):
    return made(merged_models(tiny_models, 0.8), picture, tmp_path_factory.mktemp("merged") / "merged.mp4")


# How far a LoRA applied by hooks may land from the same LoRA merged into the weights, and why on any
# IEEE-754 CPU. The two differ only in rounding: `x @ (W + u d).T` against `x @ W.T + (x @ d.T) @ u.T`,
# each inner product of length K within gamma_K * sum|x||w| of the exact one (gamma_K = K u / (1 - K u),
# u = 2**-24 in float32) whatever order a BLAS kernel sums in (Higham, Accuracy and Stability of
# Numerical Algorithms, 3.1). Another CPU sums in another order: other rounding errors, of the same size.
# Through two steps of the tiny transformer they stay near 1e-6 of the LoRA's own effect on the latents
# (measured on an Intel Xeon); the bound below, 2**-10 of that effect, leaves three orders of magnitude
# for any CPU, while a LoRA applied wrongly (alpha ignored, a split layer misassigned: the same effect
# doubled, or half of it missing) is off by the order of the effect itself.
LORA_LATENT_TOLERANCE = 2.0 ** -10
# Pixels: latents that close change each decoded value by far less than one 8-bit code, so a frame's
# uint8 RGB moves by at most 1 where a value sits at a rounding boundary; converted to yuv420p (each of
# Y, U, V a weighted sum with absolute weights summing below 1, averaged over 2x2 for U and V) that is at
# most one code of each, and back to RGB (BT.601 limited range: the largest row, B = 1.164 Y + 2.018 U,
# sums to 3.18) at most 4 codes. The AMD EPYC of issue 31 showed 3 where this test once asked for 2.
LORA_PIXEL_TOLERANCE = 4


@pytest.mark.parametrize("fmt", ["musubi", "diffusers", "hunyuan"])
def test_each_format_gives_the_hand_merged_frames(tiny_models, picture, tmp_path, fmt, base_made, merged_made):
    lora = write_lora(tmp_path / f"{fmt}.safetensors", fmt)
    assert check_lora(lora, "tiny").format == fmt
    got, got_latents = made(tiny_models, picture, tmp_path / "v.mp4", loras=[f"{lora}:0.8"])
    (base, base_latents), (merged, merged_latents) = base_made, merged_made
    assert np.abs(got - base).mean() > 2  # the LoRA changes the video
    effect = (merged_latents - base_latents).norm()
    assert (got_latents - merged_latents).norm() <= LORA_LATENT_TOLERANCE * effect  # as the merged weights do
    assert np.abs(got - merged).max() <= LORA_PIXEL_TOLERANCE


def test_weight_zero_and_removal_leave_the_base_model_exact(tiny_models, picture, tmp_path, base_frames):
    lora = write_lora(tmp_path / "l.safetensors", "musubi")
    before = {k: v.clone() for k, v in tiny_models.transformer.state_dict().items()}
    assert np.array_equal(frames(tiny_models, picture, tmp_path / "zero.mp4", loras=[(str(lora), 0.0)]),
                          base_frames)
    for weight in (1.0, -0.5, 2.0):  # switches between runs; the last one with the step cache on
        changed = frames(tiny_models, picture, tmp_path / f"w{weight}.mp4", loras=[(str(lora), weight)],
                         step_cache=weight == 2.0)
        assert np.abs(changed - base_frames).mean() > 2
    assert np.array_equal(frames(tiny_models, picture, tmp_path / "after.mp4"), base_frames)
    after = tiny_models.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in tiny_models.transformer.modules())


def test_two_loras_add_and_negative_weights_subtract(tiny_models):
    layer = tiny_models.transformer.transformer_blocks[0].attn.to_q
    x = torch.randn(3, INNER)
    down, up = _as_diffusers_layers(_delta_pairs(1))["transformer_blocks.0.attn.to_q"]
    down2, up2 = _as_diffusers_layers(_delta_pairs(2))["transformer_blocks.0.attn.to_q"]
    plain = layer(x)
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        one = write_lora(Path(folder) / "a.safetensors", "diffusers", seed=1)
        two = write_lora(Path(folder) / "b.safetensors", "hunyuan", seed=2)
        with applied_loras(tiny_models.transformer, [(one, 0.5), (two, -1.0)]) as changed:
            got = layer(x)
    assert changed == 12  # 3 + 3 split qkv, fc1, 4 from linear1, linear2
    want = plain + 0.5 * x @ (up @ down).T - x @ (up2 @ down2).T
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(layer(x), plain)


def test_lora_on_fp8_weights_adds_its_delta(tiny_models, tmp_path):
    from framepack_core.speed.precision import store_fp8

    transformer = copy.deepcopy(tiny_models.transformer)
    store_fp8(transformer)
    layer = transformer.single_transformer_blocks[1].proj_out
    assert layer.weight.dtype == torch.float8_e4m3fn
    x = torch.randn(2, INNER + MLP)
    plain = layer(x)
    lora = write_lora(tmp_path / "l.safetensors", "hunyuan")
    down, up = _as_diffusers_layers(_delta_pairs(1))["single_transformer_blocks.1.proj_out"]
    with applied_loras(transformer, [(lora, 1.0)]):
        got = layer(x)
    assert torch.allclose(got - plain, F.linear(F.linear(x, down), up), atol=1e-5)


def test_lora_with_block_streaming_stopped_and_resumed_changes_no_byte(picture, tmp_path):
    """Streamed blocks and a resume compute the same operations on the same values as the resident,
    uninterrupted run, only in tensors at other addresses: with MKL's reproducible mode on (as app.py and
    conftest.py set it, framepack_core/reproducible.py) and the LoRA's matrices aligned as the weights are,
    that is the same bytes on any CPU, not only where the kernels happen to ignore addresses."""
    from framepack_core.models.loading import load_models
    from framepack_core.speed.precision import tensor_bytes
    from memory import ModelManager, SimulatedDevice

    models = load_models("tiny")  # a private copy: placement repacks weights
    lora = write_lora(tmp_path / "l.safetensors", "diffusers")
    fields = dict(seconds=0.5, window=2, loras=[(str(lora), 1.0)])  # two sections
    whole, whole_latents = made(models, picture, tmp_path / "whole.mp4", **fields)
    streamed = []

    def streaming_manager():
        return ModelManager(SimulatedDevice(), budget_bytes=int(0.9 * tensor_bytes(models.transformer)))

    def watch(manager, stop_after=None):
        def on_event(event, run):
            if isinstance(event, Step):
                streamed.append(bool(manager.placement(models.transformer).plan.streams))
            if isinstance(event, SectionDone) and event.section + 1 == stop_after:
                run.stop()
        return on_event

    manager = streaming_manager()
    request = tiny_request(picture, **(dict(steps=2, crf=0, step_cache=False) | fields))
    stopped = run_events(request, models, tmp_path / "part.mp4", manager=manager, on_event=watch(manager, 1))[-1]
    assert stopped.stopped and stopped.sections == 1
    manager = streaming_manager()
    resumed = executed(begin(Resume(tmp_path / "part.mp4")), models, manager, watch(manager))[-1]
    assert isinstance(resumed, Finished) and not resumed.stopped and resumed.sections == 2
    assert streamed and all(streamed)
    assert torch.equal(load_latents(tmp_path / "part.latents.safetensors").video, whole_latents)
    assert np.array_equal(mp4_info(resumed.video)[1].astype(int), whole)
    assert resumed.video.read_bytes() == (tmp_path / "whole.mp4").read_bytes()


def test_the_app_turns_on_mkl_reproducible_mode_before_torch_computes(tmp_path):
    """Through app.py's own start, in a fresh process: MKL itself reports its reproducible (CNR) branch.
    A branch the user chose is kept."""
    import ctypes.util  # noqa: F401  (only to fail early where ctypes is missing)

    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    if not library.exists() or not hasattr(ctypes.CDLL(str(library)), "mkl_serv_cbwr_get"):
        pytest.skip("this torch has no MKL (macOS, aarch64): nothing to pin")
    probe = ("import ctypes, sys, app\n"
             "try:\n    app.main(['check', '--help'])\nexcept SystemExit:\n    pass\n"
             "import torch\ntorch.ones(4, 4) @ torch.ones(4, 4)\n"
             f"get = ctypes.CDLL({str(library)!r}).mkl_serv_cbwr_get\n"
             "get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int\nprint(get(1))\n")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | {"PYTHONPATH": str(ROOT)}

    def branch(**extra):
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env | extra, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    MKL_CBWR_AUTO, MKL_CBWR_COMPATIBLE = 2, 3  # mkl_cbwr.h's branch constants (both exist on any vendor's CPU)
    assert branch() == MKL_CBWR_AUTO
    assert branch(MKL_CBWR="COMPATIBLE") == MKL_CBWR_COMPATIBLE


def _bad_files(folder: Path) -> dict:
    folder.mkdir(exist_ok=True)
    pickle = folder / "pickle.safetensors"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, pickle)
    wide = folder / "wide.safetensors"  # a LoRA for a 64-wide model
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 64),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(64, 4)}, str(wide))
    unknown = folder / "unknown.safetensors"
    save_file({"model.layers.0.weight": torch.zeros(2, 2)}, str(unknown))
    missing = folder / "missing.safetensors"
    half = folder / "half.safetensors"
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 32)}, str(half))
    layer = folder / "layer.safetensors"
    save_file({"lora_unet_transformer_blocks_9_attn_to_q.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_transformer_blocks_9_attn_to_q.lora_up.weight": torch.zeros(32, 4)}, str(layer))
    text = folder / "text.safetensors"
    text.write_text("not a model")
    return {pickle: "pickle", wide: "(4, 64)", unknown: "'model.layers.0.weight'", missing: "does not exist",
            half: "no up (B) matrix", layer: "transformer_blocks_9_attn_to_q", text: "not a safetensors file"}


def test_bad_lora_files_refused_with_what_was_found(tiny_models, picture, tmp_path):
    for path, words in _bad_files(tmp_path / "bad").items():
        out = tmp_path / "out" / "v.mp4"
        events = run_events(tiny_request(picture, loras=[(str(path), 1.0)]), tiny_models, out)
        assert isinstance(events[-1], Failed) and words in events[-1].message, (path.name, events[-1].message)
        assert not out.parent.exists()
    with pytest.raises(ValueError, match="weight of LoRA"):
        Request.from_fields(image=picture, model="tiny", loras=[("x.safetensors", "heavy")]).validated()


def test_lora_weight_syntax(picture, tmp_path):
    lora = write_lora(tmp_path / "l.safetensors", "musubi")
    request = Request.from_fields(image=picture, model="tiny", resolution=128,
                                  loras=(f"{lora}:-0.5", str(lora))).validated()
    assert request.method.loras == ((str(lora), -0.5), (str(lora), 1.0))
    files = request.settings()["lora_files"]
    assert files[0]["name"] == "l.safetensors" and files[0]["weight"] == -0.5 and len(files[0]["sha256"]) == 64


def test_cli_bad_lora_exit_2_and_nothing_written(picture, tmp_path):
    wide = next(p for p in _bad_files(tmp_path / "bad") if p.name == "wide.safetensors")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", "--model", "tiny", "--image",
                             str(picture), "--resolution", "128", "--seconds", "1", "--prompt", "a",
                             "--lora", f"{wide}:0.7", "--outputs", str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "wide.safetensors does not fit this transformer" in result.stderr
    assert not out.exists()


def test_page_and_api_pick_only_files_of_the_lora_folder(tmp_path):
    from ui.creative import chosen_loras, lora_rows, parse_lora_text

    folder = tmp_path / "loras"
    folder.mkdir()
    write_lora(folder / "a.safetensors", "musubi")
    (folder / "notes.txt").write_text("x")
    assert lora_rows(folder) == [["a.safetensors", 0.0]]
    assert chosen_loras([["a.safetensors", 0.0]], folder) == ()
    assert chosen_loras([["a.safetensors", -0.5]], folder) == ((str(folder / "a.safetensors"), -0.5),)
    assert parse_lora_text("a.safetensors:0.8; a.safetensors", folder) == (
        (str(folder / "a.safetensors"), 0.8), (str(folder / "a.safetensors"), 1.0))
    for name in ("../a.safetensors", str(folder / "a.safetensors"), "b.safetensors"):
        with pytest.raises(ValueError, match="no LoRA"):
            parse_lora_text(name, folder)
