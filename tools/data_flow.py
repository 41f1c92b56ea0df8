"""How a run's start is handled, file by file: per kind of start and front end, how often its data comes back
to a file it had left (issue 26's measure).

    python tools/data_flow.py                       every path, then each group's totals; one JSON line last
    python tools/data_flow.py --only generate-new   one path (or a group: --only page; a list: a,b)
    python tools/data_flow.py --functions           each stay with the functions called in it

Run from a tree's root (this tool and tools/flow_trace.py copied into an older tree measure it the same way).
It builds the tiny model set in a private cache, offline, and makes what the paths continue (a picture, two
finished 0.8 s videos, a run stopped after its first section per path that resumes) in a temporary folder,
untraced; then it follows each path in this process (tools/flow_trace.py: steps, lookups, stays, returns).

A path is one front end's start of a run, from its inputs to a Run ready to execute:
- generate: the parsed arguments (app.py's parser, `given` as app.main sets it) through ui/cli.run_from_args
  until it returns the Run; for a new picture, --resume of a stopped run, --extend, --extend --from (a branch)
  and --bridge.
- page: a handler from its call until it hands the Run to the worker (Worker.submit stops the path): the Generate
  tab's page_run, page_resume (this page's stopped run), page_extend and page_bridge (the finished videos as
  uploads), and the Outputs tab's resume, extend, branch and bridge of runs in the outputs folder.
Run.execute (the sampling) is never part of it: it is the same for every start; nor is generate_command's other
work (the finishing-run check, the session, the progress bar).

Per path it prints stays, files, returns, returns by file and the files in order, with the same figures
counting every call (lookups too) beside them; per group (generate, page) the paths' figures added up (a file
two paths enter counts in both: returns are counted within a path, each path is a start of its own), the
distinct files of the group, and returns by file. The JSON line: {"generate": {"stays", "files", "returns",
"paths", "distinct_files", "returns_by_file", "every_call"}, "page": {...}, "paths": {name: {"stays", "files",
"returns", "sequence"}}}, with the groups that ran.

When the start API changes, update the adapters: PATHS and World's methods below (the counting stays as it is).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # the tree measured, whichever folder this runs from

from tools.flow_trace import Tracer, figures, stays  # noqa: E402

PROMPT = "a red balloon rises"
SECONDS = 0.8  # an extension's, branch's and bridge's length: two sections of the sources' window
BRANCH_AT = 0.4

# The paths, by name: each takes the World and runs its front end's start, traced (see World.generate/page/outputs).
# The group is the name's first word ("outputs" paths are the page's, in the Outputs tab).
PATHS = {
    "generate-new": lambda w: w.generate("--image", w.picture, "--prompt", PROMPT, "--model", "tiny",
                                         "--resolution", "128", "--seconds", "1", "--steps", "1", "--seed", "7"),
    "generate-resume": lambda w: w.generate("--resume", w.stopped("generate").files.record),
    "generate-extend": lambda w: w.generate("--extend", w.first.files.video, "--seconds", SECONDS),
    "generate-branch": lambda w: w.generate("--extend", w.first.files.video, "--from", BRANCH_AT,
                                            "--seconds", SECONDS),
    "generate-bridge": lambda w: w.generate("--bridge", w.first.files.video, w.second.files.video,
                                            "--seconds", SECONDS),
    "page-new": lambda w: w.page(lambda h: h.page_run(w.form())),
    "page-resume": lambda w: w.page(lambda h: h.page_resume(), last=w.stopped("page")),
    "page-extend": lambda w: w.page(lambda h: h.page_extend(str(w.first.files.video), SECONDS, "")),
    "page-bridge": lambda w: w.page(lambda h: h.page_bridge(str(w.first.files.video), str(w.second.files.video),
                                                            SECONDS, "")),
    "outputs-resume": lambda w: w.outputs(lambda o: o.resume(w.stopped("outputs").files.name)),
    "outputs-extend": lambda w: w.outputs(lambda o: o.extend(w.first.files.name, SECONDS, "")),
    "outputs-branch": lambda w: w.outputs(lambda o: o.branch(w.first.files.name, BRANCH_AT, SECONDS, "")),
    "outputs-bridge": lambda w: w.outputs(lambda o: o.bridge(w.first.files.name, w.second.files.name, SECONDS, "")),
}
GROUPS = {"generate": ("generate",), "page": ("page", "outputs")}


class World:
    """What the paths start from, made on first use (untraced): the tiny set's session, a picture, two finished
    0.8 s videos and stopped runs, all in one outputs folder; and the front ends' objects the paths call."""

    def __init__(self, folder: Path, tracer: Tracer):
        self.folder, self.tracer = folder, tracer
        self.outputs_folder = folder / "outputs"
        self._made: dict = {}

    # The adapters: how each front end is called. Only what runs inside `self.tracer.following()` is counted.

    def generate(self, *argv) -> object:
        from ui.cli import run_from_args

        args = self.parsed(*argv)
        with self.tracer.following():
            return run_from_args(args)

    def parsed(self, *argv):
        """`generate`'s arguments as app.main hands them on (`given`: the flags given), into the outputs folder."""
        from app import build_parser

        args = build_parser().parse_args(["generate", "--outputs", str(self.outputs_folder), *map(str, argv)])
        args.given = {name for name, value in vars(args).items()
                      if name != "generate_parser" and value != args.generate_parser.get_default(name)}
        return args

    def page(self, press, last=None) -> object:
        """`press(handlers)`: the handler's generator; `last`: the run this page made last (its Resume's)."""
        handlers = self.handlers()
        if last is not None:
            handlers.last_run = handlers._page_runs[""] = last
        return self._handed(handlers, press(handlers))

    def outputs(self, press) -> object:
        from ui.outputs import OutputsHandlers

        handlers = self.handlers()
        return self._handed(handlers, press(OutputsHandlers(handlers)))

    def handlers(self):
        from ui.handlers import Handlers, ServerSettings
        from ui.worker import Worker

        return Handlers(Worker(), ServerSettings("tiny", 128, self.outputs_folder))

    def form(self) -> dict:
        """The Generate tab's form: every field empty (its default) but the picture, prompt and a small run."""
        from ui.handlers import FORM_FIELDS

        return dict.fromkeys(FORM_FIELDS) | dict(image=str(self.picture), prompt=PROMPT, model="tiny", resolution=128,
                                                 seconds=1, steps=1, seed=7, randomize=False, keyframe_times="")

    def made_run(self, seed: int, mode: str, seconds: float = SECONDS, stop_after_first: bool = False):
        """A run made here on the tiny set, as `generate` makes it (stopped after its first section if asked)."""
        from ui.cli import run_from_args

        run = run_from_args(self.parsed("--image", self.picture, "--prompt", PROMPT, "--model", "tiny", "--resolution",
                                        128, "--seconds", seconds, "--window", 3, "--steps", 1, "--no-step-cache",
                                        "--seed", seed, "--mode", mode))

        def emit(event):
            if stop_after_first and type(event).__name__ == "SectionDone":
                run.stop()
        outcome = run.execute(self.session(), emit)
        assert type(outcome).__name__ == "Finished", outcome
        return run

    def session(self):
        try:
            from framepack_core.engine.session import Session
            from framepack_core.engine.session_config import SessionConfig
        except ImportError:  # the tree before issue 26's moves
            from framepack_core.session import Session
            from framepack_core.session_config import SessionConfig
        return self._once("session", lambda: Session(SessionConfig(device="cpu")))

    # What the paths start from, made once each.

    @property
    def picture(self) -> Path:
        return self._once("picture", self._noise_png)

    @property
    def first(self):
        return self._once("first", lambda: self.made_run(11, "inverted"))

    @property
    def second(self):
        return self._once("second", lambda: self.made_run(12, "forward"))

    def stopped(self, user: str):
        """A run stopped after its first of two sections, one per path that resumes (a resumed run is claimed)."""
        return self._once(f"stopped-{user}", lambda: self.made_run(13, "forward", 2 * SECONDS, stop_after_first=True))

    def _handed(self, handlers, updates):
        """Run the handler's generator until it hands its Run to the worker; that Run."""
        handed = []

        def submit(run, *args, **kwargs):
            self.tracer.pause()
            handed.append(run)
            raise _Handed()
        handlers.worker.submit = submit
        try:
            with self.tracer.following():
                for update in updates:
                    refusal = getattr(update, "refused", None)
                    if isinstance(refusal, str):
                        raise RuntimeError(f"the page refused the start: {refusal}")
        except _Handed:
            pass
        finally:
            handlers.worker.close()
        if not handed:
            raise RuntimeError("the handler ended without handing a run to the worker")
        return handed[0]

    def _once(self, key, make):
        if key not in self._made:
            assert not self.tracer.active, "sources are made before a path is followed"
            self._made[key] = make()
        return self._made[key]

    def _noise_png(self) -> Path:
        import numpy as np
        from PIL import Image

        path = self.folder / "picture.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)).save(path)
        return path


class _Handed(BaseException):
    """The page handed its run to the worker: the path ends (a BaseException, so no handler's except takes it)."""


def group_of(path: str) -> str:
    first = path.split("-")[0]
    return next(group for group, firsts in GROUPS.items() if first in firsts)


def chosen(only: str | None) -> list[str]:
    if not only:
        return list(PATHS)
    names = []
    for word in only.split(","):
        if word in PATHS:
            names.append(word)
        elif word in GROUPS:
            names += [name for name in PATHS if group_of(name) == word]
        else:
            raise SystemExit(f"--only: no path or group {word!r}; paths: {', '.join(PATHS)}; groups: "
                             f"{', '.join(GROUPS)}")
    return list(dict.fromkeys(names))


def totals(results: dict) -> dict:
    """Per group: the paths' stays, files and returns added up, the distinct files, and returns by file."""
    out = {}
    for group in GROUPS:
        mine = [r for name, r in results.items() if group_of(name) == group]
        if not mine:
            continue
        by_file = Counter()
        for r in mine:
            by_file.update(r["returns_by_file"])
        out[group] = {"stays": sum(r["stays"] for r in mine), "files": sum(r["files"] for r in mine),
                      "returns": sum(r["returns"] for r in mine), "paths": len(mine),
                      "distinct_files": len({f for r in mine for f in r["sequence"]}),
                      "returns_by_file": dict(by_file.most_common()),
                      "every_call": {key: sum(r["every_call"][key] for r in mine)
                                     for key in ("stays", "files", "returns")}}
    return out


def report(name: str, result: dict, functions: list | None) -> None:
    every = result["every_call"]
    print(f"{name}: {result['stays']} stays, {result['files']} files, {result['returns']} returns "
          f"(every call: {every['stays']} stays, {every['files']} files, {every['returns']} returns)")
    if functions is None:
        print("  " + " > ".join(result["sequence"]))
    else:
        for file, called in functions:
            print(f"  {file}: {', '.join(called)}")
    if result["returns_by_file"]:
        print("  returns: " + ", ".join(f"{file} {n}" for file, n in result["returns_by_file"].items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"paths or groups, comma-separated: {', '.join(PATHS)}; {', '.join(GROUPS)}")
    parser.add_argument("--functions", action="store_true", help="show each stay's functions, not one line")
    options = parser.parse_args(argv)
    names = chosen(options.only)

    os.environ["HF_HUB_OFFLINE"] = "1"  # never the network; the tiny set is built in a private cache
    os.environ.pop("FRAMEPACK_MODELS_DIR", None)
    with tempfile.TemporaryDirectory(prefix="framepack-data-flow-") as scratch:
        os.environ["FRAMEPACK_CACHE"] = str(Path(scratch) / "cache")
        from framepack_core.reproducible import pin_blas

        pin_blas()
        tracer = Tracer()
        world = World(Path(scratch), tracer)
        results = {}
        for name in names:
            run = PATHS[name](world)
            assert run is not None and tracer.calls, f"{name} made no run"
            results[name] = figures([file for file, _ in stays(tracer.steps)])
            results[name]["every_call"] = figures([file for file, _ in stays(tracer.all_steps)])
            report(name, results[name], stays(tracer.steps) if options.functions else None)
        summary = totals(results)
        for group, figures_ in summary.items():
            print(f"{group} ({figures_['paths']} paths): {figures_['stays']} stays, {figures_['files']} files "
                  f"({figures_['distinct_files']} distinct), {figures_['returns']} returns (every call: "
                  f"{figures_['every_call']['stays']} stays, {figures_['every_call']['returns']} returns)")
            print("  returns: " + ", ".join(f"{file} {n}" for file, n in figures_["returns_by_file"].items()))
        summary["paths"] = {name: {key: r[key] for key in ("stays", "files", "returns", "sequence")}
                            for name, r in results.items()}
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
