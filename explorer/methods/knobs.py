"""A method's knobs: declared once on its dataclass field (`knob(default, help, range=..., choices=...)`), checked
once (`knob_problem`, run by Method.__post_init__ and by the entry points' input checks), and read by the UI to
build a control per knob (explorer/ui/knobs.py). Pure Python."""
from __future__ import annotations

import dataclasses
import functools
import typing


def knob(default, help: str, range: tuple | None = None, choices: tuple | None = None,
         increasing: bool = False):
    """A dataclass field for a method knob. `range`: (low, high), both included, None for no bound (a tuple knob:
    every entry); `choices`: the allowed values; `increasing`: a tuple knob must be non-empty, strictly increasing."""
    meta = {"help": help}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    if increasing:
        meta["increasing"] = True
    return dataclasses.field(default=default, metadata=meta)


def knob_fields(cls) -> tuple[dataclasses.Field, ...]:
    """The fields a caller may set (init fields): a field declared with init=False is fixed by the method."""
    return tuple(f for f in dataclasses.fields(cls) if f.init)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _bare(hint):
    """`int | None` -> int; other hints unchanged."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(hint) else hint


def _number(value, hint) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if hint is int else isinstance(value, (int, float))


def knob_problem(cls, field: dataclasses.Field, value) -> str | None:
    """One line saying why `value` does not fit the knob `field` of method class `cls` (its type and declared
    range / choices), or None when it fits."""
    what, hint = f"{cls.name or cls.__name__}.{field.name}", _bare(_hints(cls).get(field.name))
    if value is None:
        return None if type(None) in typing.get_args(_hints(cls).get(field.name)) else f"{what} must be set"
    meta = field.metadata
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, tuple) or not all(_number(v, int) for v in value):
            return f"{what} must be a tuple of whole numbers, got {value!r}"
        if meta.get("increasing") and (not value or list(value) != sorted(set(value))):
            return f"{what} must be strictly increasing and not empty, got {value!r}"
        entries = value
    elif hint in (int, float):
        if not _number(value, hint):
            return f"{what} must be a {'whole number' if hint is int else 'number'}, got {value!r}"
        entries = (value,)
    else:
        entries = ()
    low, high = meta.get("range", (None, None))
    if any((low is not None and v < low) or (high is not None and v > high) for v in entries):
        return f"{what} must be {_interval(low, high)}, got {value!r}"
    choices = meta.get("choices")
    if choices and value not in choices:
        return f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}"
    return None


def _interval(low, high) -> str:
    if high is None:
        return f">= {low:g}"
    return f"<= {high:g}" if low is None else f"between {low:g} and {high:g}"
