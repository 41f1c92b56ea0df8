"""`generate ... --upscale 2 --interpolate 2`: the made video upscaled, then interpolated, each into its own
file with its own record; the generation's record lists both, and the last MP4's tags make a remake do them
again (fresh process, tiny set, smallest window)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from finishing_models import esrgan_state, rife_state, save
from mp4info import mp4_info, mp4_metadata

from framepack_core.request import remake_fields

ROOT = Path(__file__).resolve().parents[1]


def test_generate_then_upscale_and_interpolate(tmp_path, picture):
    save(esrgan_state(2), tmp_path / "upscalers" / "tiny-x2.pth")
    save(rife_state((32, 32, 16, 16)), tmp_path / "rife" / "flownet.pkl")
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", "--model", "tiny", "--resolution", "128",
                           "--seconds", "0.25", "--window", "2", "--steps", "2", "--image", str(picture), "--prompt",
                           "p", "--upscale", "2", "--upscaler", "tiny-x2", "--interpolate", "2", "--outputs", "out",
                           "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    made = tmp_path / "out" / record["video"]
    _, frames = mp4_info(made)
    upscaled, smoothed = record["finishing"]
    assert (upscaled["operation"], upscaled["model_file"], upscaled["status"]) == ("upscale", "tiny-x2.pth", "finished")
    assert (smoothed["operation"], smoothed["method"], smoothed["status"]) == ("interpolate", "rife", "finished")
    meta, big = mp4_info(tmp_path / "out" / upscaled["video"])
    assert big.shape[:3] == (frames.shape[0], 2 * frames.shape[1], 2 * frames.shape[2])
    meta, smooth = mp4_info(tmp_path / "out" / smoothed["video"])
    assert (smooth.shape[0], meta["fps"]) == (2 * frames.shape[0] - 1, 60.0)
    tags = json.loads(mp4_metadata(tmp_path / "out" / smoothed["video"])["comment"])
    assert [step["operation"] for step in tags["finishing"]] == ["upscale", "interpolate"]
    again = remake_fields(tags)
    assert (again["upscale"], again["upscaler"], again["interpolate"], again["prompt"]) == (2, "tiny-x2", 2, "p")


def test_an_upscaler_that_is_nowhere_is_refused_before_the_run(tmp_path, picture):
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", "--model", "tiny", "--image", str(picture),
                           "--prompt", "p", "--upscale", "2", "--upscaler", "nowhere", "--outputs", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: There is no upscaler called 'nowhere'")
    assert not (tmp_path / "out").exists()
