"""tools/data_flow.py: the files a start passes through, as stays and returns (its definition in its docstring)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tools.flow_trace import Tracer, figures, stays

ROOT = Path(__file__).resolve().parents[2]


def test_a_new_picture_from_generate_is_followed_from_the_command_line_to_the_run():
    result = subprocess.run([sys.executable, "tools/data_flow.py", "--only", "generate-new"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"generate", "paths"}  # the page's paths were not asked for
    path, group = summary["paths"]["generate-new"], summary["generate"]
    sequence = path["sequence"]
    assert (path["stays"], path["files"]) == (len(sequence), len(set(sequence)))
    assert path["stays"] >= path["files"] and path["returns"] == path["stays"] - path["files"]
    assert all(a != b for a, b in zip(sequence, sequence[1:]))  # a stay is every consecutive step in one file
    assert sequence[0] == "ui/cli.py" and "framepack_core/run/lifecycle.py" in sequence
    assert (group["stays"], group["files"], group["returns"], group["paths"]) == \
        (path["stays"], path["files"], path["returns"], 1)
    assert group["every_call"]["stays"] >= group["stays"]  # lookups only ever add stays
    assert sum(group["returns_by_file"].values()) == group["returns"]


def _module(root: Path, name: str, source: str):
    path = root / "framepack_core" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"flow_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lookups_are_part_of_the_callers_stay_and_coming_back_is_a_return(tmp_path):
    """a.start: two lookups in b (no stay), b.work (a stay: it calls back into a, a lookup there), then a's own
    functions again (a return)."""
    _module(tmp_path, "b", "def lookup():\n    return 1\n\ndef work(back):\n    return lookup() + back()\n")
    a = _module(tmp_path, "a", "import flow_b as b\n\ndef helper():\n    return 2\n\n"
                               "def start():\n    b.lookup()\n    b.lookup()\n    b.work(helper)\n"
                               "    return sorted([3, 1], key=lambda x: helper() * x)\n")
    tracer = Tracer(tmp_path.resolve())
    with tracer.following():
        assert a.start() == [1, 3]
    sequence = [file for file, _ in stays(tracer.steps)]
    assert sequence == ["framepack_core/a.py", "framepack_core/b.py", "framepack_core/a.py"]
    assert [functions for _, functions in stays(tracer.steps)] == [
        ["start"], ["work", "lookup"], ["start.<locals>.<lambda>", "helper"]]
    assert figures(sequence) | {"sequence": None} == {
        "stays": 3, "files": 2, "returns": 1, "returns_by_file": {"framepack_core/a.py": 1}, "sequence": None}
    # Every call, lookups too: b's four calls in a row are one stay, and a's callback begins the return.
    assert [(file, functions) for file, functions in stays(tracer.all_steps)] == [
        ("framepack_core/a.py", ["start"]), ("framepack_core/b.py", ["lookup", "work"]),
        ("framepack_core/a.py", ["helper", "start.<locals>.<lambda>"])]
