"""Breaking points: along a ladder of budgets, where does each method's answer stop matching vanilla's?

No Gradio and no model code: `breaking_points` takes a `run(methods) -> results` callable (today the engine's
compare path with the results cache; the shared-prefix runtime can be swapped in there) and plain results.
"""
from __future__ import annotations

import dataclasses

from .boxes import iou
from .limits import InputError
from .methods import MethodError

LADDER = (1, 1 / 2, 1 / 4, 1 / 9, 1 / 18, 1 / 36, 1 / 72)  # of the image's tokens: 576 -> 576 288 144 64 32 16 8
IOU_AGREES = 0.5  # a grounding answer agrees when its box overlaps the target this much


def ladder(tokens: int) -> list[int]:
    """The default budgets for an image of `tokens` tokens, largest first, distinct, each >= 1."""
    return sorted({max(1, round(tokens * f)) for f in LADDER}, reverse=True)


def parse_budgets(text, tokens: int, most: int) -> list[int]:
    """Budgets typed as '576, 288, 64' (empty: the default ladder), largest first; each in 1..tokens."""
    if text is None or not str(text).strip():
        return ladder(tokens)[:most]
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError("Budgets must be whole numbers separated by commas, e.g. 576, 144, 64.") from None
    if not values or any(v != int(v) or not 1 <= v <= tokens for v in values):
        raise InputError(f"Each budget must be a whole number from 1 to the image's {tokens} tokens.")
    budgets = sorted({int(v) for v in values}, reverse=True)
    if len(budgets) > most:
        raise InputError(f"At most {most} budgets per breaking-point run, got {len(budgets)}.")
    return budgets


def agreement(result: dict, vanilla: dict, reference=None) -> tuple[bool, float | None]:
    """(agrees, IoU or None). Grounding (vanilla's answer holds a box): IoU >= 0.5 of one of the method's boxes
    with the reference box when given, else with vanilla's first box. Otherwise the answer text, exactly."""
    target = reference or next((b["box"] for b in vanilla.get("boxes", []) if b["image"] == 0), None)
    if vanilla.get("boxes") and target:
        best = max((iou(b["box"], target) for b in result.get("boxes", []) if b["image"] == 0), default=0.0)
        return best >= IOU_AGREES, round(best, 4)
    return (result.get("answer") or "").strip() == (vanilla.get("answer") or "").strip(), None


def curve(name: str, label: str, points: list[dict]) -> dict:
    """One method's points (largest budget first) and its breaking point: `first_disagreement` is the largest
    budget where it disagrees; `holds_down_to` the smallest budget down to which every budget agrees."""
    holds, first = None, None
    for p in points:
        if p["agrees"] is None:  # this budget could not run: it neither holds nor breaks
            continue
        if not p["agrees"]:
            first = p["budget"]
            break
        holds = p["budget"]
    return {"method": name, "label": label, "points": points, "holds_down_to": holds, "first_disagreement": first}


def breaking_points(run, methods: list, budgets: list[int], vanilla: dict, reference=None) -> dict:
    """Every non-vanilla method at every budget (`dataclasses.replace(method, keep=b, ratio=None)`) against `vanilla`'s result.

    `run(methods, done, total)` returns one result per method; `done`/`total` feed one progress bar."""
    pruning = [m for m in methods if m.prunes]
    if not pruning:
        raise InputError("Choose at least one pruning method besides vanilla.")
    total = len(pruning) * len(budgets)
    points = {m.name: [] for m in pruning}
    for i, budget in enumerate(budgets):
        batch = [dataclasses.replace(m, keep=budget, ratio=None) for m in pruning]
        for m, result in zip(pruning, _run_each(run, batch, i * len(pruning), total)):
            points[m.name].append(_point(budget, result, vanilla, reference))
    return {"vanilla": {"answer": vanilla["answer"], "boxes": vanilla.get("boxes", [])}, "budgets": budgets,
            "reference": reference, "criterion": "iou" if vanilla.get("boxes") else "text",
            "curves": [curve(m.name, m.label, points[m.name]) for m in pruning]}


def _run_each(run, batch, done, total) -> list:
    """The batch in one call; when it is refused, each method alone (one refusal is one point's error)."""
    try:
        return run(batch, done, total)
    except (InputError, MethodError):
        out = []
        for j, m in enumerate(batch):
            try:
                out += run([m], done + j, total)
            except (InputError, MethodError) as exc:
                out.append({"status": "error", "reason": str(exc).splitlines()[0]})
        return out


def _point(budget: int, result: dict, vanilla: dict, reference) -> dict:
    if result.get("status") != "ok":
        return {"budget": budget, "answer": None, "agrees": None, "reason": result.get("reason", "did not run")}
    agrees, overlap = agreement(result, vanilla, reference)
    return {"budget": budget, "answer": result["answer"], "agrees": agrees,
            "tokens": result.get("tokens", {}).get("kept_at_layer"),
            **({"iou": overlap} if overlap is not None else {})}
