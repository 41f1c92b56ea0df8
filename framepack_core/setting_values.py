"""One value against its entry of the settings table: whether the table takes it (`check_value`: bounds,
choices, kinds, older words) and which recorded names a request takes back (`job_fields`).

What a form, a flag, a record or a start checks a single value with, before a request is made of them;
plain Python beside the table, so a check is never a trip through the request.
"""
from __future__ import annotations

import math
import numbers

from .settings import SETTINGS, Scope, Setting, SettingKind, canonical_name


def check_value(setting: Setting, value):
    """`value` as the setting keeps it; ValueError with one sentence when the table refuses it.
    Pictures, paths and LoRAs pass through: their own checks need more than the table."""
    if value is None and setting.optional:
        return None
    value = next((new for old, new in setting.legacy if _same(value, old)), value)
    if setting.kind == SettingKind.INT:
        value = check_integer(setting.words, value, setting.low, setting.high)
        if setting.choices and value not in setting.choices:
            raise ValueError(f"{setting.words} must be one of {', '.join(map(str, setting.choices))}, not {value}.")
        return value
    if setting.kind == SettingKind.FLOAT:
        check_number(setting.words, value, setting.low, setting.high, setting.low_open)
    elif setting.kind == SettingKind.BOOL and not isinstance(value, bool):
        choices = "true, false or automatic" if setting.optional else "true or false"
        raise ValueError(f"The {setting.words} option must be {choices}, not {value!r}.")
    elif setting.kind == SettingKind.CHOICE:
        if value not in setting.choices:
            raise ValueError(f"{setting.words} must be one of {', '.join(setting.choices)}, not {value!r}.")
        return next(choice for choice in setting.choices if choice == value)  # the table's own (an enum's member)
    elif setting.kind == SettingKind.TEXT and not isinstance(value, str):
        raise ValueError(f"The {setting.words} must be text.")
    return value


def _same(value, old) -> bool:
    """`value` is the older value `old` (words in any case: a CSV cell may say TRUE)."""
    if isinstance(value, str) and isinstance(old, str):
        return value.lower() == old
    return type(value) is type(old) and value == old


def job_fields(recorded: dict) -> dict:
    """The `Request.from_fields` names among recorded settings (older names read as today's): what a
    resume, an extension or a remake takes back. Pictures, where the video went, what was used and what
    follows from the rest are left out, and so is what a video from another version may carry."""
    out = {}
    for key, value in recorded.items():
        name = canonical_name(key)
        setting = SETTINGS.get(name)
        if setting is not None and setting.scope is Scope.JOB and (key == name or name not in recorded):
            out[name] = value
    return out


def check_number(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        empty = value is None or (isinstance(value, str) and not value.strip())  # an empty box on the page
        raise ValueError(f"{name} must be a number, not {'empty' if empty else repr(value)}.")
    if value < low or value > high or (low_open and value == low):
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise ValueError(f"{name} must be {bound} and at most {high:g}, not {value:g}.")


def check_integer(name: str, value, low: int, high: int) -> int:
    """The value as an int (sliders send whole floats); raises on anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}.")
    return int(value)
