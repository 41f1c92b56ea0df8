"""One video on several processes (framepack_core/parallel/), on the CPU with gloo and the tiny set:
the split transformer call and whole runs (the token split, CFG on two processes, both) give one
process's latents; Stop stops them all; a lost process ends the run in one sentence and the run
resumes. The multi-process claims share one spawn (see `spawned`): starting processes is the cost."""
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch.multiprocessing as mp

from framepack_core.events import Finished
from framepack_core.media.latents import load_latents
from framepack_core.parallel.group import free_port
from framepack_core.run.files import RunFiles
from tests.support.helpers import run_events, tiny_request
from tests.support.parallel_forward import ranks_main
from tests.models.test_lora import write_lora

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # float32, relative


def _relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# A LoRA, a timed prompt and a step cache that skips, as a real run may have them all at once.
SPLIT = dict(window=2, steps=2, seconds=0.5, prompt="[0s: a red balloon rises] [0.3s: a blue kite falls]",
             cache_method="first-block", cache_threshold=1.0)
# A CFG above 1 with a negative prompt and no step cache: the two passes on two processes (group.Layout).
GUIDED = dict(window=2, steps=2, seconds=0.25, cfg=1.5, negative_prompt="blurry, dark", step_cache=False)
RUNS = (  # (name, fields, processes, stop after the first section)
    ("inverted-2", SPLIT | {"mode": "inverted"}, 2, False), ("inverted-3", SPLIT | {"mode": "inverted"}, 3, False),
    ("forward-2", SPLIT | {"mode": "forward"}, 2, False), ("forward-3", SPLIT | {"mode": "forward"}, 3, False),
    ("cfg-2", GUIDED, 2, False), ("cfg-4", GUIDED, 4, False),
    ("stopped-2", dict(window=2, steps=2, seconds=0.5), 2, True))


@pytest.fixture(scope="module")
def spawned(tiny_models, picture, tmp_path_factory):
    """Every multi-process claim below from one spawn of 4 processes (each process start imports torch and
    loads the models: the cost on a CPU): the split transformer call on 3 of them, then each run of RUNS;
    meanwhile this process makes the one-process runs to compare with, through the run path."""
    folder = tmp_path_factory.mktemp("parallel")
    lora = write_lora(folder / "style.safetensors", "musubi")
    with_lora = {"loras": ((str(lora), 0.8),)}
    requests = {name: tiny_request(picture, gpus=processes, **fields, **(with_lora if "cache_method" in fields else {}))
                for name, fields, processes, _ in RUNS}
    context = mp.get_context("spawn")
    calls, made = context.Queue(), context.Queue()
    jobs = [(name, requests[name].validated(), processes, free_port(), stop) for name, _, processes, stop in RUNS]
    forward_port = free_port()
    processes = [context.Process(target=ranks_main, args=(rank, forward_port, jobs, str(folder), calls, made))
                 for rank in range(4)]
    for process in processes:
        process.start()
    try:
        ones = {}
        for name in ("inverted-2", "forward-2", "cfg-2"):
            output = folder / f"{name}-one.mp4"
            request = replace(requests[name], speed=replace(requests[name].speed, gpus=1))
            events = run_events(request, tiny_models, output)
            ones[name.split("-")[0]] = _finished_latents(events, output)
        split = sorted((calls.get(timeout=600) for _ in range(3)), key=lambda r: r[0])
        videos_made = {}
        while True:
            name, *rest = made.get(timeout=600)
            if name is None:
                break
            assert rest[3] is not None, rest[0]  # a rank's traceback
            videos_made[name] = rest
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * 4
    return split, ones, videos_made


def test_one_call_split_over_three_ranks_is_the_whole_call(spawned):
    """6 heads over 3 ranks: Ulysses; 2 heads over 3: the keys and values gathered. (2 heads over 2 ranks,
    Ulysses with an even split, is the runs' case below.)"""
    for rank, calls in spawned[0]:
        for heads, whole, split, undone, counts, ulysses, sent in calls:
            assert whole.shape == (1, 16, 2, 6, 10)
            assert _relative(split, whole) <= TOLERANCE, (rank, heads)
            assert np.array_equal(undone, whole)  # the model is itself again afterwards
            assert ulysses is (heads == 6) and sent > 0
            # 74 packed tokens: noisy and clean 2 frames of 3x5 each, 2x history 1 frame of 2x3, 4x 4 frames of 1x2
            assert counts == (25, 25, 24) and sum(counts) == 2 * 15 + 2 * 15 + 6 + 4 * 2


def _finished_latents(events, path: Path):
    final = events[-1]
    assert isinstance(final, Finished), final
    return final, load_latents(path.with_suffix(".latents.safetensors")).video.numpy()


@pytest.mark.parametrize("mode", ["inverted", "forward"])
def test_two_and_three_processes_make_the_latents_of_one(mode, spawned):
    one, one_latents = spawned[1][mode]
    assert one.blocks_skipped > 0 and one.sections >= 2
    for processes in (2, 3):
        latents, done, steps, made, split = spawned[2][f"{mode}-{processes}"]
        assert split == (processes, False)  # every process splits the tokens
        assert latents.shape == one_latents.shape and done == one.sections
        assert _relative(latents, one_latents) <= TOLERANCE, processes
        assert (made.frames, made.blocks_skipped, made.blocks_computed) == (
            one.frames, one.blocks_skipped, one.blocks_computed)


def test_cfg_on_two_processes_alone_and_with_the_split_on_four_makes_the_latents_of_one(spawned):
    from framepack_core.parallel.group import Layout

    assert Layout.of(2, 1.5, step_cache=False) == Layout(2, 1) and Layout.of(4, 1.5, False) == Layout(2, 2)
    assert Layout.of(2, 1.5, step_cache=True) == Layout(1, 2) and Layout.of(3, 1.5, False) == Layout(1, 3)
    assert Layout.of(2, 1.0, step_cache=False) == Layout(1, 2)
    one, one_latents = spawned[1]["cfg"]
    for processes in (2, 4):
        latents, done, steps, made, split = spawned[2][f"cfg-{processes}"]
        assert split == (processes // 2, True)  # two CFG passes at once, each over half the processes
        assert latents.shape == one_latents.shape and (done, made.frames) == (one.sections, one.frames)
        assert _relative(latents, one_latents) <= TOLERANCE, processes


def test_stop_on_rank_0_stops_every_process_at_the_same_step(spawned):
    latents, done, steps, made, _ = spawned[2]["stopped-2"]
    assert made.stopped and made.sections_done == 1 and done == 1
    assert steps == [1, 2]  # every rank stops before the second section: else the shared flag would hang


def _worker(app: psutil.Process) -> psutil.Process | None:
    """The app's rank-1 process (a multiprocessing spawn child; not its resource tracker)."""
    for child in app.children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            pass
    return None


def test_a_killed_process_ends_the_run_in_one_line_and_resume_finishes_it(picture, tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    output = tmp_path / "k.mp4"
    app = subprocess.Popen([sys.executable, "app.py", "generate", "--model", "tiny", "--resolution", "128",
                            "--steps", "2", "--window", "2", "--seconds", "1", "--gpus", "2", "--seed", "3",
                            "--prompt", "a red balloon rises", "--image", str(picture), "--output", str(output),
                            # CFG on the two processes (group.Layout), through the app as a user runs it
                            "--cfg", "1.5", "--negative-prompt", "blurry", "--no-step-cache"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    files = RunFiles(tmp_path, "k")
    try:
        # Once the first section is kept, rank 1 is killed (the test's own grandchild).
        while app.poll() is None and not (files.latents.exists() and load_latents(files.latents).done >= 1):
            time.sleep(0.05)
        worker = _worker(psutil.Process(app.pid))
        assert worker is not None and app.poll() is None
        worker.kill()
        killed = time.monotonic()
        _, stderr = app.communicate(timeout=120)  # a guard against a hang, not a time limit
        ended = time.monotonic() - killed
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "device 2 of 2 ended unexpectedly" in errors[0] and "--resume" in errors[0]
    record = files.read_record()
    assert record["status"] == "failed" and record["settings"]["gpus"] == 2 and record["settings"]["cfg"] == 1.5
    done = load_latents(files.latents).done
    assert 1 <= done < 4
    resumed = subprocess.run([sys.executable, "app.py", "generate", "--resume", str(output), "--json"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["status"] == "finished" and summary["frames"] == 33 and summary["sections"] == 4
    assert summary["settings"]["gpus"] == 2 and load_latents(files.latents).done == 4
    print(f"the run ended {ended:.1f} s after its rank 1 was killed")


def test_bench_smallest_mode_counts_the_bytes_each_rank_sends():
    done = subprocess.run([sys.executable, "bench/cpu/sequence_parallel.py", "--smallest"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    one, two = result["runs"]
    assert (one["processes"], two["processes"]) == (1, 2) and one["bytes_per_step_per_rank"] == 0
    assert result["speedup_at_2"] == round(one["seconds_per_step"] / two["seconds_per_step"], 3)
    # 21 packed tokens (noisy and clean 2 frames of 2x2, 2x history 1, 4x history 4) split 11 | 10; 20 text and
    # picture tokens; 2 heads of 16 floats, one per rank; 2 blocks. Rank 0 sends per attention: its 11 tokens'
    # q, k, v for the other head, the other rank's 10 tokens' output, its text head; per call, block 0's and
    # the last block's output (padded to 11 tokens, 32 floats).
    head_row = 16 * 4
    attention = 3 * 11 * head_row + 10 * head_row + 20 * head_row
    assert two["image_tokens"] == 21 and two["bytes_per_step_per_rank"] == 2 * attention + 2 * 11 * 32 * 4
    assert 0 < two["attention_share"] < 1


def test_a_rank_lost_while_loading_or_failing_is_one_sentence():
    import queue
    import threading
    from types import SimpleNamespace

    from framepack_core.failures import Cancelled, RankLost, user_message
    from framepack_core.parallel.launch import _wait_until_ready

    alive, dead = SimpleNamespace(exitcode=None), SimpleNamespace(exitcode=-9)
    messages = queue.Queue()
    messages.put((1, None, None))  # rank 1 ready; rank 2 killed while loading
    with pytest.raises(RankLost) as lost:
        _wait_until_ready([alive, dead], messages, threading.Event())
    assert str(lost.value) == "The process for device 3 of 3 ended unexpectedly (exit code -9)."
    assert user_message(lost.value) == ("The process for device 3 of 3 ended unexpectedly (exit code -9). What was "
                                        "finished is kept: resume the run (--resume, or Resume on the page).")
    messages.put((2, "The computer ran out of memory (RAM).", "Traceback ..."))
    with pytest.raises(RankLost, match=r"^The process for device 3 of 3 failed: The computer ran out of memory"):
        _wait_until_ready([alive, alive], messages, threading.Event())
    stop = threading.Event()
    stop.set()  # Stop while the other processes load: the wait ends at once
    with pytest.raises(Cancelled):
        _wait_until_ready([alive, alive], queue.Queue(), stop)
