"""Re-select kept tokens from scores already computed (new α or budget) without a model call."""
from __future__ import annotations

import copy
import math

import torch

from ..methods import REGISTRY
from ..methods.alpha import blend
from ..methods.scoring import top_k_sorted

# Methods whose kept set is exactly top-k of their reported scores (fastv_reverse reports negated attention).
FROM_SCORES = {"fastv", "fastv_vis", "fastv_reverse", "alpha"}


def budget(n: int, keep: int | None, ratio: float | None) -> int:
    if keep is not None:
        if keep > n:
            raise ValueError(f"keep={keep} is more than the image's {n} tokens")
        return keep
    return max(1, math.floor(n * ratio)) if ratio is not None else n


def _wanted(result: dict, alpha: float, keep: int | None, ratio: float | None) -> dict:
    config = dict(result["config"])
    fields = getattr(REGISTRY.get(result["method"]), "__dataclass_fields__", config)
    if "alpha" in fields:
        config["alpha"] = alpha
    if "keep" in fields:
        config["keep"], config["ratio"] = keep, ratio
    return config


def _reselect_entry(method: str, entry: dict, config: dict) -> dict | None:
    """New image entry with kept (and blended scores for α); None if it cannot be derived from scores."""
    if method not in FROM_SCORES or "segments" in entry:
        return None
    k = budget(entry["image_tokens"], config.get("keep"), config.get("ratio"))
    entry = dict(entry)
    if method == "alpha":
        parts = entry.get("score_parts") or {}
        if "importance" not in parts or "uniqueness" not in parts:
            return None
        scores = blend(torch.tensor(parts["importance"]), torch.tensor(parts["uniqueness"]), config["alpha"])
        entry["scores"] = [round(float(v), 6) for v in scores]
    if "scores" not in entry:
        return None
    entry["kept"] = top_k_sorted(torch.tensor(entry["scores"]), k).tolist()
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
        entries = [_reselect_entry(result["method"], e, wanted) for e in result.get("ran_images", result["images"])]
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
