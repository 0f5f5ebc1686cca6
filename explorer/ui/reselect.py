"""Re-select kept tokens from scores already computed (new α or budget) without a model call.

No rule of its own: the method is rebuilt from its reported configuration with the new knobs (its own
validation), its own `budget` gives k and its own `from_scores` re-derives the kept set from the scores and
score parts the run reported; a method that cannot (its choice is not a function of its scores) is marked stale.
"""
from __future__ import annotations

import copy

import torch

from ..methods import REGISTRY, MethodError, make


def _wanted(result: dict, alpha: float, keep: int | None, ratio: float | None) -> dict:
    config = dict(result["config"])
    fields = getattr(REGISTRY.get(result["method"]), "__dataclass_fields__", config)
    if "alpha" in fields:
        config["alpha"] = alpha
    if "keep" in fields:
        config["keep"], config["ratio"] = keep, ratio
    return config


def _method(config: dict):
    """The method a result's configuration names (its own checks apply)."""
    knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "method"}
    return make(config["method"], **knobs)


def _reselect_entry(method, entry: dict) -> dict | None:
    """New image entry with kept (and the scores it ranked); None if it cannot be derived from scores."""
    if "segments" in entry:  # several grids: the ranking unit decides; re-run instead
        return None
    try:
        k = method.budget(entry["image_tokens"])
    except MethodError as exc:
        raise ValueError(str(exc)) from None
    scores = torch.tensor(entry["scores"]) if "scores" in entry else None
    parts = {name: torch.tensor(values) for name, values in (entry.get("score_parts") or {}).items()}
    sel = method.from_scores(scores, parts, k)
    if sel is None:
        return None
    entry = dict(entry)
    entry["kept"] = sel.kept.tolist()
    if sel.scores is not None:
        entry["scores"] = [round(float(v), 6) for v in sel.scores]
    return entry


def reselect(payload: dict, alpha: float, keep: int | None, ratio: float | None) -> dict:
    """A copy of `payload` re-selected at (alpha, budget); answers and costs are marked stale where changed."""
    out = copy.deepcopy(payload)
    for result in out["results"]:
        if result["method"] == "vanilla" or result.get("status") == "not_applicable":
            continue
        ran = result.get("ran_with", result["config"])
        wanted = _wanted({**result, "config": ran}, alpha, keep, ratio)
        if wanted == ran:
            if "ran_with" in result:  # back to the settings it ran with: restore what the run chose
                result["config"] = ran
                result["images"] = result.pop("ran_images")
                result.pop("ran_with")
                result.pop("stale", None)
            continue
        method = _method(wanted)
        entries = [_reselect_entry(method, e) for e in result.get("ran_images", result["images"])]
        if any(e is None for e in entries):
            result["stale"] = "Cannot re-select this method from scores: press Compare to re-run it."
            continue
        result.setdefault("ran_with", ran)
        result.setdefault("ran_images", result["images"])
        result["config"], result["images"] = wanted, entries
        result["stale"] = "Kept set re-selected from cached scores; answer and costs are from the run " \
                          "— press Compare to re-run."
    out["reselected"] = {"alpha": alpha, "keep": keep, "ratio": ratio}
    return out
