"""`generate ... --upscale 2 --interpolate 2`: the made video upscaled (per finished section), then interpolated,
each into its own file with its own record; the generation's record lists both, and the last MP4's tags make a
remake do them again; a killed run resumed gives the same bytes (fresh processes, tiny set, smallest window)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tests.support.finishing_models import esrgan_state, rife_state, save
from tests.support.mp4info import mp4_info, mp4_metadata

from framepack_core.request import remake_fields
from framepack_core.starts import Resume, begin

ROOT = Path(__file__).resolve().parents[2]


# The real entry point with finishing parts of 4 frames (30 by default), so that a 0.75 s clip has several.
PATCHED = "import sys; import framepack_core.finishing.per_section as p; p.PART_FRAMES = 4; import app; " \
          "sys.exit(app.main(sys.argv[1:]))"
GENERATE = ["generate", "--model", "tiny", "--resolution", "128", "--seconds", "0.75", "--window", "2", "--steps", "1",
            "--mode", "forward", "--seed", "5", "--prompt", "p", "--upscale", "2", "--upscaler", "tiny-x2",
            "--interpolate", "2"]


def app(*args, cwd):
    return subprocess.Popen([sys.executable, "-c", PATCHED, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1",
                                                                                 "PYTHONPATH": str(ROOT)})


def test_generate_upscales_per_section_and_a_killed_run_resumes_to_the_same_bytes(tmp_path, picture):
    """Forward sampling, 3 sections of 8 frames: the upscale's parts are made as sections become final, a run
    SIGKILLed once one is made keeps it, and `generate --resume` ends with the bytes of a run never killed; the
    interpolation follows on the upscaled video; the records and tags say what was applied."""
    save(esrgan_state(2), tmp_path / "upscalers" / "tiny-x2.pth")
    save(rife_state((32, 32, 16, 16)), tmp_path / "rife" / "flownet.pkl")
    whole = app(*GENERATE, "--image", picture, "--output", "a/g.mp4", "--json", cwd=tmp_path)
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-2000:]
    record = json.loads(out.strip().splitlines()[-1])
    _, frames = mp4_info(tmp_path / "a" / "g.mp4")
    upscaled, smoothed = record["finishing"]
    assert (upscaled["operation"], upscaled["model_file"], upscaled["status"]) == ("upscale", "tiny-x2.pth", "finished")
    assert (smoothed["operation"], smoothed["method"], smoothed["status"]) == ("interpolate", "rife", "finished")
    meta, big = mp4_info(tmp_path / "a" / upscaled["video"])
    assert big.shape[:3] == (25, 2 * frames.shape[1], 2 * frames.shape[2]) and frames.shape[0] == 25
    meta, smooth = mp4_info(tmp_path / "a" / smoothed["video"])
    assert (smooth.shape[0], meta["fps"]) == (49, 60.0)
    tags = json.loads(mp4_metadata(tmp_path / "a" / smoothed["video"])["comment"])
    assert [step["operation"] for step in tags["finishing"]] == ["upscale", "interpolate"]
    again = remake_fields(tags)
    assert (again["upscale"], again["upscaler"], again["interpolate"], again["prompt"]) == (2, "tiny-x2", 2, "p")

    killed = app(*GENERATE, "--image", picture, "--output", "b/g.mp4", cwd=tmp_path)
    staged = tmp_path / "b" / ".g.upscale-x2.parts"
    deadline = time.monotonic() + 300
    while not (staged / "part-00001.mp4").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)  # (the test's own child)
    killed.wait()
    assert json.loads((tmp_path / "b" / "g.json").read_text())["status"] == "running"  # killed mid-generation
    assert not (tmp_path / "b" / "g.mp4").exists() and mp4_info(staged / "part-00001.mp4")[1].shape[0] == 4
    resumed = app("generate", "--resume", "b/g.json", cwd=tmp_path)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    for name in ("g.mp4", "g.upscaled-x2.mp4", "g.upscaled-x2.interpolated-x2.mp4"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    assert not staged.exists() and not (tmp_path / "b" / ".g.upscaled-x2.parts").exists()


def test_an_upscaler_that_is_nowhere_is_refused_before_the_run(tmp_path, picture):
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "generate", "--model", "tiny", "--image", str(picture),
                           "--prompt", "p", "--upscale", "2", "--upscaler", "nowhere", "--outputs", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: There is no upscaler called 'nowhere'")
    assert not (tmp_path / "out").exists()


def test_a_stopped_generation_keeps_its_finished_upscaled_part(tmp_path, picture, tiny_models, monkeypatch,
                                                                 request):
    """Stopped after its second section: the upscale's parts of the final frames are kept and shown joined, and
    the resume takes them over (in-process, the tiny set loaded once)."""
    from tests.support.helpers import executed, run_events, tiny_request

    from framepack_core.finishing import per_section

    monkeypatch.setattr(per_section, "PART_FRAMES", 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared by many processes: torch's own threads only fight over them
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    save(esrgan_state(2), tmp_path / "tiny-x2.pth")
    asked = tiny_request(picture, seconds=0.75, window=2, steps=1, mode="forward", seed=5, upscale=2,
                           upscaler=str(tmp_path / "tiny-x2.pth"))
    run_events(asked, tiny_models, tmp_path / "g.mp4",
               on_event=lambda event, run: run.stop() if getattr(event, "final_frames", 0) >= 12 else None)
    record = json.loads((tmp_path / "g.json").read_text())
    assert record["status"] == "stopped" and record["frames"] == 17  # two sections of 8 after the first frame
    (kept,) = record["finishing"]  # 17 frames, 5 still blended into: 12 final, two whole parts of 4 and a third
    assert (kept["operation"], kept["parts_done"], kept["frames"]) == ("upscale", 2, 8)
    meta, so_far = mp4_info(tmp_path / kept["partial_video"])
    assert (meta["size"], so_far.shape[0]) == ((2 * record["width"], 2 * record["height"]), 8)
    staged = tmp_path / ".g.upscale-x2.parts"
    shutil.copyfile(staged / "part-00002.mp4", staged / "part-00001.mp4")  # marked: taken over, or made again?
    executed(begin(Resume(tmp_path / "g.json")), tiny_models)
    assert json.loads((tmp_path / "g.json").read_text())["finishing"][0]["status"] == "finished"
    _, whole = mp4_info(tmp_path / "g.upscaled-x2.mp4")
    assert whole.shape[0] == 25 and np.array_equal(whole[4:8], so_far[4:8])
    assert np.array_equal(whole[:4], so_far[4:8])  # the kept parts were taken over, not made again
    assert not (tmp_path / kept["partial_video"]).exists() and not staged.exists()
