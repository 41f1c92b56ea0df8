"""One session configuration, from the flags, for every front end (issue 18 item 4)."""
from types import SimpleNamespace

import app
from framepack_core.engine.session import Session
from framepack_core.engine.session_config import SessionConfig
from tests.support.helpers import tiny_request
from jobs.store import JobStore
from memory import GiB, weight_ram_budget
from ui.queue_cli import executor_from_args


def test_queue_run_ram_budget_reaches_the_workers_session(tmp_path, picture):
    flags = ["queue", "run", "--ram-budget", "3.5", "--vram-budget", "5", "--models-dir", "weights",
             "--outputs", str(tmp_path)]
    expected = SessionConfig(models_dir="weights", vram_budget_gb=5.0, ram_budget_gb=3.5)

    local, _ = executor_from_args(JobStore(tmp_path), app.build_parser().parse_args(flags))
    assert local.session.config == expected

    from jobs.ray_pool import JobWorker

    ray, _ = executor_from_args(JobStore(tmp_path), app.build_parser().parse_args(flags + ["--ray"]))
    assert ray.config == expected
    assert JobWorker(ray.config).session.config == expected  # what each Ray worker is built with

    # ...and the session hands the RAM budget to the memory manager of every run.
    manager = SimpleNamespace(manages_device=True, ram_budget_bytes=None)
    session = Session(local.session.config, loader=lambda name, models_dir=None, progress=None: f"{name}@{models_dir}",
                      manager_factory=lambda device, budget, models, request: manager)
    models, made = session.prepare(tiny_request(picture), lambda event: None)
    assert models == "tiny@weights" and made is manager
    assert manager.ram_budget_bytes == weight_ram_budget(int(3.5 * GiB))


def test_generate_and_the_page_take_the_same_flags():
    generate = app.build_parser().parse_args(["generate", "--image", "a.png", "--prompt", "p", "--ram-budget", "7",
                                              "--vram-budget", "4", "--models-dir", "m"])
    page = app.build_parser().parse_args(["--ram-budget", "7", "--vram-budget", "4", "--models-dir", "m"])
    expected = SessionConfig(models_dir="m", vram_budget_gb=4.0, ram_budget_gb=7.0)
    assert SessionConfig.from_args(generate) == SessionConfig.from_args(page) == expected

    from ui.worker import Worker  # what the page's create_app builds from its config

    worker = Worker(SessionConfig.from_args(page))
    try:
        assert worker.session.config == expected
    finally:
        worker.close()
