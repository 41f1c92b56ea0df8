"""The command line's flags of the settings table (framepack_core/settings.py), for every command that takes one:
its name, type, default, choices, metavar and help come from the table entry, so a flag is declared once there
however many commands take it (`generate`, `check`, `queue run`, `upscale`...).

argparse and the table only: `python app.py --help` imports no torch.
"""
from __future__ import annotations

import argparse

from framepack_core.settings import SETTINGS, SETTINGS_LIST, Part, Setting, SettingKind, settings_of

# The session's flags (where the weights are, the RAM budget) and the VRAM budget the session shares with
# requests: what every command that loads models takes.
SESSION_FLAGS = tuple(s.name for s in settings_of(Part.SESSION))
BUDGET_FLAGS = ("vram_budget_gb", *SESSION_FLAGS)

# `generate --help` in the groups a person looks for (argparse argument groups); a setting not named here shows
# under "more settings". Also where generate's own flags (--resume, --json, ...) go.
GENERATE_GROUPS = {
    "input": ("image", "end_image", "keyframes", "prompt", "negative_prompt", "loras", "model"),
    "length and quality": ("seconds", "steps", "seed", "gs", "cfg", "rs", "window", "mode", "resolution",
                           "prompt_blend", "loop", "variant", "shift"),
    "speed": ("step_cache", "cache_method", "cache_threshold", "cache_calibrate", "attention_requested", "fp8",
              "compile"),
    "memory": ("vram_budget_gb", "vae_tiling", *SESSION_FLAGS),
    "continuing a video": (),
    "output": ("folder", "path", "crf"),
    "more settings": (),
}
_NUMBERS = (SettingKind.INT, SettingKind.FLOAT)


def add_setting_flags(parser: argparse.ArgumentParser, names=None, groups: dict | None = None, **changes) -> None:
    """The flags of the settings table (all that have one, or `names`); `changes`: argparse keywords by name;
    `groups`: argument groups by GENERATE_GROUPS' titles, each flag into its own."""
    where = {name: title for title, names_ in GENERATE_GROUPS.items() for name in names_}
    for setting in SETTINGS_LIST if names is None else [SETTINGS[name] for name in names]:
        if setting.flag is not None:
            target = groups[where.get(setting.name, "more settings")] if groups else parser
            target.add_argument(setting.flag, **_flag_keywords(setting) | changes.get(setting.name, {}))


def _metavar(setting: Setting) -> str | None:
    """What a flag's value is, from the table: its range for a number ("1..100"), FILE for a path, TEXT for
    words; None where argparse shows the choices itself."""
    if setting.choices:
        return None
    if setting.metavar:
        return setting.metavar
    if setting.name in ("folder", "path"):
        return {"folder": "DIR", "path": "FILE.mp4"}[setting.name]
    if setting.kind in _NUMBERS and setting.low is not None and setting.high is not None and setting.high < 10**6:
        return f"{setting.low:g}..{setting.high:g}"
    return {SettingKind.INT: "N", SettingKind.FLOAT: "NUMBER", SettingKind.PATH: "FILE",
            SettingKind.PICTURE: "PICTURE", SettingKind.TEXT: "TEXT"}.get(setting.kind)


def _flag_keywords(setting: Setting) -> dict:
    default, help_ = setting.cli_default, setting.help
    if setting.kind == SettingKind.BOOL and setting.flag_values is None:  # --compile, --no-step-cache
        return dict(dest=setting.dest, action="store_true" if not default else "store_false", help=help_)
    if setting.repeats:  # --lora, --keyframe
        return dict(dest=setting.dest, action="append", default=[], metavar=setting.metavar, help=help_)
    if setting.flag_values is not None:  # words for values: --vae-tiling auto|on|off
        default = next(word for word, value in setting.flag_values.items() if value == default)
        return dict(choices=tuple(setting.flag_values), default=default, help=f"{help_} (default {default})")
    if setting.kind in _NUMBERS and default is not None:
        help_ += f" (default {default:g})"
    elif setting.choices and default is not None:
        help_ += f" (default {default})"
    kind = {SettingKind.INT: int, SettingKind.FLOAT: float}.get(setting.kind, str)
    default = str(default) if setting.kind == SettingKind.PATH and default is not None else default
    optional = dict(nargs="?", const=setting.flag_const) if setting.flag_const is not None else {}
    return dict(type=kind, default=default, choices=setting.choices or None, metavar=_metavar(setting), help=help_,
                **optional)
