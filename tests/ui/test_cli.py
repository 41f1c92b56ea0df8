"""`python app.py generate` end to end, as a user runs it: a real process on the tiny set."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.mp4info import mp4_info

ROOT = Path(__file__).resolve().parents[2]


def run_app(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "app.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ | (env or {}))


@pytest.mark.parametrize("seconds,frames,sections", [(2, 73, 2), (1, 37, 1)])
def test_generate_tiny(tiny_models, picture, tmp_path, seconds, frames, sections):
    out = tmp_path / "video.mp4"
    result = run_app("generate", "--model", "tiny", "--resolution", 128, "--seconds", seconds, "--image", picture,
                     "--prompt", "waves roll in", "--output", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["output"] == str(out) and summary["frames"] == frames and summary["sections"] == sections
    assert summary["fps"] == 30 and summary["seed"] == 31337 and summary["seconds_elapsed"] > 0
    assert summary["width"] % 16 == 0 and summary["height"] % 16 == 0 and summary["width"] > summary["height"]
    meta, decoded = mp4_info(out)
    assert decoded.shape == (frames, summary["height"], summary["width"], 3)
    assert meta["codec"] == "h264" and meta["fps"] == 30 and meta["pix_fmt"].startswith("yuv420p")
    # Not a terminal: one plain line per section's sampling, no carriage returns.
    bars = [line for line in result.stderr.splitlines() if " steps in " in line]
    assert bars == [f"section {i}/{sections}: 25 steps in " + bars[i - 1].split(" steps in ")[1]
                    for i in range(1, sections + 1)]
    assert "\r" not in result.stderr


def test_generate_on_a_terminal_draws_one_bar_for_the_run(tiny_models, picture, tmp_path):
    """stderr on a pseudo-terminal: the run's bar is drawn on one line and redrawn in place
    (carriage returns) at every step, never a new line per step. Two sections of the smallest useful
    window (2 latent frames each): the bars are the point, not the length of the video."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a width
    proc = subprocess.Popen([sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128",
                             "--seconds", "0.5", "--window", "2", "--steps", "4", "--image", str(picture), "--prompt", "p",
                             "--output", str(tmp_path / "o.mp4")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=follower)
    os.close(follower)
    chunks = []

    def read():
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the process closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=30)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    # One bar for the run, redrawn in place; each "section i/2 done" line is written above it (the bar moves down
    # a line), never a line per step.
    bars = [line for line in text.split("\n") if "section " in line and "%|" in line]
    assert len(bars) <= 3, text
    drawn = [part for line in bars for part in line.split("\r") if "%|" in part]
    percents = [int(re.match(r"section \d/2: +(\d+)%", part).group(1)) for part in drawn]
    assert len(drawn) >= 8 and percents == sorted(percents) and percents[-1] == 100, text
    # All of the last section's steps drawn before its decode and write: not yet full (they are work too).
    last_steps = [pct for part, pct in zip(drawn, percents) if part.startswith("section 2/2") and "step 4/4" in part]
    assert last_steps and max(last_steps) < 100, text


@pytest.mark.parametrize("args,message", [
    (["--image", "/no/such.png"], "does not exist"),
    (["--seconds", "0"], "Length in seconds"),
    (["--seconds", "-3"], "Length in seconds"),
    (["--steps", "0"], "Steps"),
    (["--mode", "forward", "--end-image", "{img}"], "end frame"),
    (["--output", "{img}/inside.mp4"], "which is a file"),
    (["--image", "{txt}"], "not a picture"),
])
def test_bad_input_gets_one_clear_line(tiny_models, picture, tmp_path, args, message):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    args = [a.format(img=picture, txt=text) for a in args]
    base = {"--image": str(picture), "--output": str(tmp_path / "o.mp4")}
    for flag in ("--image", "--output"):
        if flag not in args:
            args += [flag, base[flag]]
    result = run_app("generate", "--model", "tiny", "--resolution", 128, "--prompt", "p", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and not (tmp_path / "o.mp4").exists()


def test_seed_must_be_an_integer(picture):
    result = run_app("generate", "--model", "tiny", "--image", picture, "--prompt", "p", "--seed", "abc")
    assert result.returncode == 2 and "--seed" in result.stderr and "Traceback" not in result.stderr


def test_offline_message_names_what_to_download(picture, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "FRAMEPACK_MODELS_DIR": ""}
    result = run_app("generate", "--image", picture, "--prompt", "p", "--output", tmp_path / "o.mp4", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for needle in ("hunyuanvideo-community/HunyuanVideo", "lllyasviel/FramePackI2V_HY", "lllyasviel/flux_redux_bfl",
                   "GB", "--models-dir", "--model tiny"):
        assert needle in result.stderr, needle
    assert list(tmp_path.glob("o.*")) == []  # refused before it started: no failed record, no picture


def test_ctrl_c_stops_and_keeps_the_video_so_far(tiny_models, picture, tmp_path):
    import signal

    out = tmp_path / "stopped.mp4"
    proc = subprocess.Popen([sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128",
                             "--seconds", "6", "--steps", "5", "--image", str(picture), "--prompt", "p", "--output", str(out),
                             "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "section 1/5 done" in line:
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped"] is True and 1 <= summary["sections"] < 5
    assert mp4_info(out)[1].shape[0] == summary["frames"] == 33 + 36 * (summary["sections"] - 1)


def test_help_and_the_page_server_load_no_model_library():
    """`--help` answers before torch could load, and the page's server starts before the model libraries
    (they come with the first browser or the first run)."""
    code = ("import sys, app; app.build_parser().format_help(); import ui.serve; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
