"""Bounds on the work one request may ask for, and the checks that apply them before any model work.

Every bound is a named field of `Limits` with a default; `Limits.from_env()` reads `EXPLORER_<FIELD>`
overrides (e.g. `EXPLORER_MAX_METHODS=8`). Every refusal is an `InputError` with one line for the user.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass

from .methods.knobs import knob_problem


class InputError(ValueError):
    """Bad user input (image, prompt, budget, layer, bound exceeded); the message is one line for the user."""


@dataclass(frozen=True)
class Limits:
    """The named bounds; every entry point (UI, API, CLI, eval) checks against one instance."""

    max_images: int = 8  # images in one request
    max_pixels: int = 40_000_000  # decoded pixels of one image (checked from the header before decoding)
    max_aspect: float = 20.0  # longer side / shorter side
    min_side: int = 2  # pixels
    max_prompt_chars: int = 2000
    max_methods: int = 24  # distinct methods in one request (duplicates are dropped first); >= every registered one
    max_new_tokens: int = 256
    max_repeats: int = 20  # timed repeats per method
    max_seed: int = 2**31 - 1  # seeds are whole numbers in [0, max_seed]
    max_samples: int = 60  # docs in one Analysis sweep
    max_budgets: int = 8  # budgets in one Analysis sweep
    max_alphas: int = 11  # α values in one Analysis sweep (Table 4 has 11)
    max_runs: int = 1200  # samples x method configurations in one Analysis sweep
    max_models: int = 2  # models kept loaded besides the pinned ones (embedded, app default); LRU beyond
    max_compare_seconds: float = 300.0  # one Compare request: no further method starts after this
    max_analysis_seconds: float = 900.0  # wall-clock budget of one Analysis sweep; it stops after the run in progress

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None) -> Limits:
        """Defaults, overridden by EXPLORER_<FIELD> environment variables."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"EXPLORER_{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = type(f.default)(raw)
                except ValueError:
                    raise InputError(f"EXPLORER_{f.name.upper()} must be a number, got {raw!r}.") from None
        return cls(**values)


def whole(value, what: str, low: int, high: int) -> int:
    """`value` as an int in [low, high], or an InputError naming `what` (no Python error text)."""
    number = _integer(value)
    if number is None:
        raise InputError(f"{what} must be a whole number, got {_short(value)}.")
    if not low <= number <= high:
        raise InputError(f"{what} must be between {low} and {high}, got {_short(number)}.")
    return number


def _integer(value) -> int | None:
    """An int from an int, an integral finite float or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def real(value, what: str, low: float, high: float) -> float:
    """`value` as a finite float in [low, high], or an InputError naming `what`."""
    if isinstance(value, bool):
        raise InputError(f"{what} must be a number, got {value!r}.")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be a number, got {_short(value)}.") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{what} must be between {low:g} and {high:g}, got {_short(value)}.")
    return number


def method_names(names, limits: Limits, known) -> list[str]:
    """Requested method names, de-duplicated in order, all known, at most `limits.max_methods`."""
    names = [names] if isinstance(names, str) else list(names or [])
    if not all(isinstance(n, str) for n in names):
        raise InputError("Methods must be given by name.")
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise InputError("Choose at least one method.")
    if len(names) > limits.max_methods:
        raise InputError(f"At most {limits.max_methods} methods per request, got {len(names)}.")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"{_short(', '.join(unknown))}: unknown method(s); known: {', '.join(known)}.")
    return names


def knob_values(cls, values: dict, limits: Limits) -> dict:
    """Per-method knobs coerced to the method's field types (int, float, str, tuple of int), then checked by the
    method's own rule for that knob (`knob_problem`: the range and choices its field declares, the same ones its UI
    control shows)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in cls.knobs()}
    out = {}
    for name, value in values.items():
        if name not in fields:
            raise InputError(f"{cls.name} has no knob {_short(name)}; it has {', '.join(fields)}.")
        out[name] = _typed(value, hints.get(name), f"{cls.name}.{name}", limits)
        problem = knob_problem(cls, fields[name], out[name])
        if problem:
            raise InputError(f"{problem[:200]}.")
    return out


def _typed(value, hint, what: str, limits: Limits):
    """One knob value coerced to its declared type, or an InputError."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None and type(None) in typing.get_args(hint):
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    if what.endswith(".seed"):
        return whole(value, "The seed", 0, limits.max_seed)
    if hint is int:
        return whole(value, what, 0, 10**6)
    if hint is float:
        return real(value, what, -1e6, 1e6)
    if hint is str:
        if not isinstance(value, str) or len(value) > 100:
            raise InputError(f"{what} must be a short text, got {_short(value)}.")
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 64:
            raise InputError(f"{what} must be a list of 1 to 64 whole numbers, got {_short(value)}.")
        return tuple(whole(v, what, 0, 10**6) for v in value)
    return value


SEED_CEILING = 2**63 - 1  # torch generators take seeds below 2**64; per-image offsets are added to it


def check_seed(method, high: int = SEED_CEILING) -> None:
    """A method's seed (if it has one) is a whole number in [0, high]."""
    if hasattr(method, "seed"):
        whole(method.seed, "The seed", 0, high)


def sweep_size(n_samples: int, n_configs: int, budgets: list, alphas: list | None, limits: Limits) -> None:
    """The Analysis sweep's dimensions: samples, budgets, α values and their product."""
    if not 1 <= n_samples <= limits.max_samples:
        raise InputError(f"Samples must be between 1 and {limits.max_samples} here; use the CLI for more.")
    if len(budgets) > limits.max_budgets:
        raise InputError(f"At most {limits.max_budgets} budgets per analysis, got {len(budgets)}.")
    if alphas and len(alphas) > limits.max_alphas:
        raise InputError(f"At most {limits.max_alphas} α values per analysis, got {len(alphas)}.")
    if n_samples * n_configs > limits.max_runs:
        raise InputError(f"That analysis needs {n_samples * n_configs} model runs; the limit is {limits.max_runs} "
                         "(fewer samples, methods, budgets or α values).")


def _short(value, width: int = 40) -> str:
    text = repr(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
