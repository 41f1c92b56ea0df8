"""`python app.py` (serve): the page on 127.0.0.1:7860 unless told otherwise."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

# Before gradio is imported: it reads this once, and a desktop app must not phone home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from framepack_core.engine.session_config import SessionConfig  # noqa: E402

from .handlers import Handlers, ServerSettings  # noqa: E402
from .layout import CSS, THEME, build_page  # noqa: E402
from .queue_handlers import QueueHandlers  # noqa: E402
from .worker import Worker  # noqa: E402


def create_app(model: str, resolution: int, outputs: str | os.PathLike, model_choices: tuple[str, ...],
               config: SessionConfig | None = None, worker: Worker | None = None,
               lora_dir: str | os.PathLike | None = "loras", import_folders=()):
    """The page and its worker (its session from `config`), not yet launched (tests launch it on a free port)."""
    worker = worker or Worker(config)
    settings = ServerSettings(model=model, resolution=resolution, outputs=Path(outputs).resolve(),
                              lora_dir=Path(lora_dir).resolve() if lora_dir else None,
                              import_folders=tuple(Path(folder).resolve() for folder in import_folders))
    handlers = Handlers(worker, settings)
    queue = QueueHandlers(handlers)  # the shared job queue in the outputs folder, worked through here
    queue.set_running(True)
    worker.queue = queue  # closed with the worker
    page = build_page(handlers, model_choices, queue=queue)
    page.queue(default_concurrency_limit=1)
    return page, worker


MAX_UPLOAD = "50mb"  # pictures only: a larger upload is refused before it reaches the disk


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """`user:password` (the password may hold colons) as gradio's auth pair; None when not given."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth takes user:password, both non-empty")
    return user, password


def launch(page: gr.Blocks, worker: Worker, outputs: Path, host: str = "127.0.0.1", port: int = 7860,
           share: bool = False, inbrowser: bool = False, auth: tuple[str, str] | None = None):
    """Start serving and return (app, local_url, share_url) without blocking.

    Files served: the outputs folder, the worker's snapshots and gradio's own uploads; nothing else.
    """
    return page.launch(
        server_name=host, server_port=port, share=share, inbrowser=inbrowser, prevent_thread_lock=True,
        theme=THEME, css=CSS, ssr_mode=False, show_error=True, footer_links=["api", "settings"],
        allowed_paths=[str(Path(outputs).resolve()), str(worker.scratch)], quiet=True,
        auth=auth, max_file_size=MAX_UPLOAD)


def serve_command(args, model_choices: tuple[str, ...]) -> int:
    host = "0.0.0.0" if args.listen else args.host
    try:
        auth = parse_auth(getattr(args, "auth", None))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.share:
        print("warning: --share makes a public gradio.live link: anyone with it can use this GPU"
              + ("" if auth else " (add --auth user:password to ask for a password)"), file=sys.stderr, flush=True)
    outputs = Path(args.outputs)
    try:
        outputs.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot use {outputs} for outputs ({error})", file=sys.stderr)
        return 2
    page, worker = create_app(args.model, args.resolution, outputs, model_choices, SessionConfig.from_args(args),
                              lora_dir=getattr(args, "lora_dir", "loras"),
                              import_folders=getattr(args, "allow_folder", None) or ())
    # A plain `kill` then ends the run and cleans up like Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        try:
            _, local_url, share_url = launch(page, worker, outputs, host, args.port, args.share, args.inbrowser,
                                             auth)
        except OSError as error:  # gradio's words for a port in use
            print(f"error: cannot serve on {host}:{args.port} ({error}); try another --port", file=sys.stderr)
            return 1
        print(f"FramePack is ready: open {local_url} (models load on the first Start; Ctrl+C quits)", flush=True)
        # Process-wide, once, before the first run's thread exists (it imports torch, so after the page is up).
        from memory.host import limit_heap_arenas

        limit_heap_arenas(2)  # many runs on fresh threads: keep the process's memory flat (see memory/host.py)
        if share_url:
            print(f"public link: {share_url}", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1") or share_url:
            print("warning: the page is reachable from other machines; anyone who reaches it can use this GPU",
                  file=sys.stderr, flush=True)
        print(f"videos, pictures and settings go to {outputs.resolve()}", flush=True)
        page.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
        worker.queue.close()
        worker.close()
    return 0
