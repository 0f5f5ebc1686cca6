"""Table 6, training-aware compression: for a model that already merges patches in training (Qwen2-VL's and
Qwen2.5-VL's PatchMerger, 2x2 -> TACR 4), the token reduction rate counted from image *patches* is
TRR = TACR x TFRR (Eq. 8, as compression factors). FastV (training-free framing) removes R of the LM's
visual tokens V; FastV† (training-aware framing) counts R against the patches P = TACR * V, so it keeps
min(V, P * (1 - R)) tokens -- at R <= 1 - 1/TACR it keeps them all.

No trained Qwen model is available offline here: `table6` runs on whatever Qwen2-VL / Qwen2.5-VL checkpoint it
is given (the tests use tiny random ones, whose accuracies are noise).
"""
from __future__ import annotations

import math

from ..settings import EVAL


def tacr(config) -> int:
    """Training-aware compression ratio: patches merged into one LM token (spatial_merge_size²); 1 if none."""
    vision = getattr(config, "vision_config", None)
    merge = getattr(vision, "spatial_merge_size", None) or 1
    return int(merge) ** 2


def framings(v_tokens: int, reduction: float, ratio: int) -> dict:
    """Kept tokens and rates for both framings of one reduction R, for V LM tokens and TACR `ratio`."""
    patches = v_tokens * ratio
    keep_free = max(1, math.floor(v_tokens * (1 - reduction) + 1e-9))
    keep_aware = max(1, min(v_tokens, math.floor(patches * (1 - reduction) + 1e-9)))
    return {"reduction": reduction, "tacr": ratio, "patches": patches, "tokens": v_tokens,
            "keep_fastv": keep_free, "tfrr_fastv": v_tokens / keep_free, "trr_fastv": ratio * v_tokens / keep_free,
            "keep_fastv_dagger": keep_aware, "tfrr_fastv_dagger": v_tokens / keep_aware,
            "trr_fastv_dagger": ratio * v_tokens / keep_aware}


def table6(engine, model_id: str, task: str = "pope", reductions=(0.667, 0.778, 0.889), n: int = 20,
           data: str | None = "toy", seed: int = EVAL.seed, max_new_tokens: int = EVAL.max_new_tokens,
           layer: int = EVAL.layer) -> tuple[str, list]:
    """Rates for every R plus FastV vs FastV† accuracy on `n` docs of `task`. Returns (markdown, rows)."""
    from ..methods import make
    from . import tasks as task_mod
    from .sources import open_source

    loaded = engine.model(model_id)
    ratio = tacr(loaded.model.config)
    t = task_mod.get(task)
    src = open_source(task, data, n, seed)
    docs = [src[i] for i in range(len(src))]
    prepared = [engine.prepare(loaded, t.doc_to_visual(d), t.doc_to_text(d)) for d in docs]
    v_tokens = prepared[0].layouts[0].count

    vanilla = make("vanilla")
    budgets = []  # per reduction: (FastV, FastV†)
    for r in reductions:
        # Ratios, not counts, so every doc (Qwen2-VL token counts vary with image size) gets the same rates.
        aware = ratio * (1 - r)
        budgets.append((make("fastv", ratio=round(1 - r, 6), layer=layer),
                        vanilla if aware >= 1 else make("fastv", ratio=round(aware, 6), layer=layer)))
    accuracy = _accuracies(engine, loaded, t, docs, prepared, [vanilla, *(m for pair in budgets for m in pair)],
                           max_new_tokens)
    rows = [{"reduction": 0.0, "label": "vanilla", "keep_fastv": v_tokens, "acc_fastv": accuracy[vanilla]}]
    for r, (free, dagger) in zip(reductions, budgets):
        f = framings(v_tokens, r, ratio)
        f["acc_fastv"], f["acc_fastv_dagger"] = accuracy[free], accuracy[dagger]
        rows.append(f)
    lines = [f"Model `{loaded.model_id}`: TACR = {ratio} (spatial merge), V = {v_tokens} LM tokens for the "
             f"first doc = {v_tokens * ratio} patches (counts below are for that doc; runs use the ratios); "
             f"{task} {t.primary} on {len(docs)} docs.\n",
             "| R (↓) | FastV keeps | FastV TFRR × TACR = TRR | FastV acc | FastV† keeps | FastV† TFRR × TACR = TRR "
             "| FastV† acc |", "|---" * 7 + "|",
             f"| 0 (vanilla) | {v_tokens} | 1 × {ratio} = {ratio} | {100 * rows[0]['acc_fastv']:.1f} | – | – | – |"]
    for f in rows[1:]:
        lines.append(f"| {100 * f['reduction']:.1f}% | {f['keep_fastv']} | {f['tfrr_fastv']:.2f} × {ratio} = "
                     f"{f['trr_fastv']:.2f} | {100 * f['acc_fastv']:.1f} | {f['keep_fastv_dagger']} | "
                     f"{f['tfrr_fastv_dagger']:.2f} × {ratio} = {f['trr_fastv_dagger']:.2f} | "
                     f"{100 * f['acc_fastv_dagger']:.1f} |")
    return "\n".join(lines), rows


def _accuracies(engine, loaded, task, docs, prepared, methods, max_new_tokens) -> dict:
    """method -> the task's primary score over `docs`; every method of a doc in one compare (one trunk per doc)."""
    from . import tasks as task_mod

    recs = {m: [] for m in methods}
    for doc, prep in zip(docs, prepared):
        outcomes = engine.run_many(loaded, prep, methods, max_new_tokens)
        for method in recs:
            if isinstance(outcomes[method], Exception):
                raise outcomes[method]
            recs[method].append({"metrics": task.process_results(doc, outcomes[method])})
    return {m: task_mod.score(task, r) for m, r in recs.items()}
