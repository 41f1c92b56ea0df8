"""The settings table is the one place a setting is spelt: flags, the page, requests, records and the
queue's columns are made from it, so a new entry reaches all of them."""
import json
import subprocess
import sys
import textwrap
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from framepack_core.method.sections import SectionSettings
from framepack_core.request import MethodSettings, OutputSettings, Request, SpeedSettings, remake_fields
from framepack_core.settings import DEFAULTS, SETTINGS, SETTINGS_LIST, Part, Scope, SettingKind

ROOT = Path(__file__).resolve().parents[2]


# The type a request's field has for each kind of setting (a choice: its choices' type; None a value where the
# setting is optional or its default is "not given").
_TYPES = {SettingKind.INT: "int", SettingKind.FLOAT: "float", SettingKind.BOOL: "bool", SettingKind.TEXT: "str",
          SettingKind.PATH: "Path", SettingKind.PICTURE: "Picture", SettingKind.LORAS: "tuple",
          SettingKind.KEYFRAMES: "tuple"}


def _field_type(setting) -> str:
    kind = type(setting.choices[0]).__name__ if setting.kind == SettingKind.CHOICE else _TYPES[setting.kind]
    return kind + (" | None" if setting.optional or setting.default is None else "")


def test_the_requests_written_out_fields_are_exactly_the_tables():
    """request.py writes each field out (for readers and type checkers); it must say what the table says: the
    same names in the same order in the same part, of the kind's type, with the table's default."""
    parts = {Part.TOP: Request, Part.METHOD: MethodSettings, Part.OUTPUT: OutputSettings, Part.SPEED: SpeedSettings}
    for part, kind in parts.items():
        table = [s for s in SETTINGS_LIST if s.part is part and s.scope is not Scope.RECORD]
        written = [f for f in fields(kind) if f.name not in ("method", "output", "speed", "derived", "picture_files")]
        assert [f.name for f in written] == [s.name for s in table], part
        assert {f.name: f.type for f in written} == {s.name: _field_type(s) for s in table}, part
        assert {f.name: f.default for f in written} == {s.name: s.default for s in table}, part
        assert all(type(f.default) is type(s.default) for f, s in zip(written, table)), part
        typing.get_type_hints(kind)  # every annotation names a real type
    assert [f.name for f in fields(Request)][-5:] == ["method", "output", "speed", "derived", "picture_files"]
    # The session's settings are the process's: no request has them, and none takes them.
    session = [s.name for s in SETTINGS_LIST if s.part is Part.SESSION]
    assert session == ["models_dir", "ram_budget_gb"]
    assert all(s.scope is Scope.SESSION for s in SETTINGS_LIST if s.part is Part.SESSION)
    assert all(s.part is Part.SESSION for s in SETTINGS_LIST if s.scope is Scope.SESSION)
    for name in session:
        with pytest.raises(ValueError, match=f"Unknown setting: {name}"):
            Request.from_fields(image="p", **{name: "x"})
    assert not set(session) & set(Request.from_fields(image="p").settings())


def test_the_section_loops_defaults_are_the_tables():
    section = {f.name: f.default for f in fields(SectionSettings) if f.name != "mode"}
    assert section == {name: DEFAULTS[name] for name in section}  # the section loop's defaults are the table's


def test_the_parsers_defaults_and_choices_are_the_tables():
    import app

    gen = app.build_parser().parse_args(["generate"])
    for setting in SETTINGS_LIST:
        if setting.flag is None:
            continue
        value = getattr(gen, setting.dest)
        if setting.flag_values is not None:
            value = setting.flag_values[value]
        elif setting.repeats:
            value = tuple(value)
        elif setting.kind == "path" and value is not None:
            value = Path(value)
        # The setting's default, or None where the table says "not given" (no --prompt; --fp8 alone is storage).
        expected = setting.default if setting.flag_default is ... else setting.flag_default
        assert value == expected, setting.name
    from ui.cli import settings_from_args

    given = app.build_parser().parse_args(["generate", "--image", "p.png", "--prompt", "x", "--vae-tiling", "off",
                                           "--no-step-cache", "--lora", "a.safetensors:0.5", "--attention", "sdpa"])
    values = settings_from_args(given)
    assert (values["vae_tiling"], values["step_cache"], values["loras"]) == (False, False, ("a.safetensors:0.5",))
    assert values["attention_requested"] == "sdpa" and values["image"] == "p.png"
    check = app.build_parser().parse_args(["check"])
    assert (check.model, check.resolution, check.seconds, check.fp8) == (
        DEFAULTS["model"], DEFAULTS["resolution"], DEFAULTS["seconds"], DEFAULTS["fp8"])
    assert [app.build_parser().parse_args(["check", *flags]).fp8 for flags in (["--fp8"], ["--fp8", "fast"])] == [
        "storage", "fast"]  # as generate reads them
    assert settings_from_args(app.build_parser().parse_args(["generate", "--fp8"]))["fp8"] == "storage"
    assert "fp8" not in settings_from_args(app.build_parser().parse_args(["generate"]))  # the request's default


def test_old_names_are_read_and_the_new_name_wins():
    assert Request.from_fields(image="p", attention="flash").speed.attention_requested == "flash"
    both = Request.from_fields(image="p", attention="flash", attention_requested="sdpa")
    assert both.speed.attention_requested == "sdpa"
    assert remake_fields({"attention": "auto", "attention_used": "xformers", "app": "x"}) == {
        "attention_requested": "xformers"}


# Other defaults in the table, before anything reads it: the memory plan, `check` and the step caches follow.
CHANGED_DEFAULTS = textwrap.dedent('''
    import dataclasses, inspect, json
    import framepack_core.settings as table

    for name, value in dict(resolution=512, seconds=3.0, window=5, steps=7, fp8="storage").items():
        table.SETTINGS[name] = dataclasses.replace(table.SETTINGS[name], default=value)
        table.DEFAULTS[name] = value

    import app
    from framepack_core.engine.memory_plan import plan_run
    from framepack_core.speed.step_cache import make_strategy, step_cache

    check = app.build_parser().parse_args(["check"])
    window = inspect.signature(plan_run).parameters["window"].default
    plan = plan_run("framepack", 6, 16)
    print(json.dumps(dict(
        check=[check.resolution, check.seconds, check.fp8], plan=[plan.resolution, plan.seconds, plan.fp8, window],
        steps=[inspect.signature(f).parameters["steps"].default for f in (make_strategy, step_cache)])))
''')


def test_the_memory_plan_check_and_the_step_caches_take_their_defaults_from_the_table():
    result = subprocess.run([sys.executable, "-c", CHANGED_DEFAULTS], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == dict(
        check=[512, 3.0, "storage"], plan=[512, 3.0, "storage", 5], steps=[7, 7])


# A made-up setting: one entry, added to the table before anything reads it (as if it were in the file), and
# its field in its part's dataclass, one line added to request.py's text (as a developer would write it).
MADE_UP = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from PIL import Image
    import framepack_core.settings as table
    from framepack_core.settings import Part, Setting, SettingKind, Widget, WidgetKind

    entry = Setting("sparkle", Part.METHOD, SettingKind.BOOL, False, flag="--sparkle", help="add sparkles",
                    widget=Widget(WidgetKind.CHECKBOX, "Sparkle", "settings"))
    table.SETTINGS_LIST += (entry,)
    table.SETTINGS["sparkle"] = entry
    table.DEFAULTS["sparkle"] = False

    import importlib.util
    source = Path("framepack_core/request.py").read_text()
    last = '    loras: tuple = DEFAULTS["loras"]'
    assert source.count(last) == 1
    source = source.replace(last, last + '\\n    sparkle: bool = DEFAULTS["sparkle"]')
    request_module = importlib.util.module_from_spec(importlib.util.spec_from_loader("framepack_core.request", None))
    request_module.__package__, request_module.__file__ = "framepack_core", "framepack_core/request.py"
    sys.modules["framepack_core.request"] = request_module
    exec(compile(source, "framepack_core/request.py", "exec"), request_module.__dict__)

    import app
    from framepack_core.request import Request, remake_fields
    from framepack_core.starts import FromPicture, begin
    from jobs.intake import read_rows
    from ui.cli import settings_from_args
    from ui.handlers import FORM_FIELDS, Handlers, ServerSettings
    from ui.layout import build_page
    from ui.worker import Worker

    out, picture = Path(sys.argv[1]), sys.argv[2]
    args = app.build_parser().parse_args(["generate", "--image", picture, "--prompt", "p", "--sparkle"])
    flag = settings_from_args(args)["sparkle"]
    worker = Worker()  # its session (torch) is made on first use: never here
    handlers = Handlers(worker, ServerSettings(model="tiny", resolution=128, outputs=out))
    page = build_page(handlers)
    widget = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "fp-sparkle")
    start = next(f for f in page.fns.values() if f.name == "run")
    form = handlers.request_fields({"image": Image.open(picture), "prompt": "p", "sparkle": True})
    run = begin(FromPicture(Request.from_fields(**form, folder=out)))
    record = json.loads(run.files.record.read_text())
    worker.close()
    print(json.dumps(dict(
        flag=flag, in_form="sparkle" in FORM_FIELDS, widget=[type(widget).__name__, widget.label],
        start_takes_it=widget in start.inputs, requested=run.request.method.sparkle,
        recorded=record["settings"]["sparkle"], remade=remake_fields(record)["sparkle"],
        default=Request.from_fields(image=picture).method.sparkle,
        csv=read_rows("image,sparkle\\nx.png,true\\n", "jobs.csv")[0][1]["sparkle"])))
''')


def test_a_made_up_setting_is_one_table_entry_and_its_field(picture, tmp_path):
    result = subprocess.run([sys.executable, "-c", MADE_UP, str(tmp_path), str(picture)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == dict(flag=True, in_form=True, widget=["Checkbox", "Sparkle"], start_takes_it=True, requested=True,
                        recorded=True, remade=True, default=False, csv=True)
    assert "sparkle" not in SETTINGS  # the entry lived in that process only
