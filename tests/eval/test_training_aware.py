"""Table 6 (training-aware compression) on Qwen2.5-VL as on Qwen2-VL: the counts the table prints are what the
runtime keeps on the model, for both framings."""
from __future__ import annotations

import pytest

from explorer.eval import tasks as task_mod
from explorer.eval.sources import open_source
from explorer.eval.training_aware import table6, tacr
from explorer.methods import make


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_table6_counts_are_what_the_runs_keep(engine, checkpoints, family):
    """Tiny Qwen2.5-VL (windowed tower, 2x2 PatchMerger, M-RoPE): TACR 4; for every R the table's FastV and
    FastV† kept counts equal `kept_at_layer` of the runs table6 makes (same doc, same ratios, cut at K=2), and at
    R <= 1 - 1/TACR FastV† keeps every token (vanilla)."""
    model_id = str(checkpoints[family])
    md, rows = table6(engine, model_id, "pope", reductions=(0.5, 0.8, 0.9), n=1, max_new_tokens=1, layer=2)
    lm = engine.model(model_id)
    assert lm.family.name == family and tacr(lm.model.config) == 4 and "TACR = 4" in md
    task = task_mod.get("pope")
    doc = open_source("pope", "toy", 1, 0)[0]
    prep = engine.prepare(lm, task.doc_to_visual(doc), task.doc_to_text(doc))
    v = prep.layouts[0].count
    assert rows[0]["keep_fastv"] == v and len(rows) == 4
    for row in rows[1:]:
        r = row["reduction"]
        free = engine.run(lm, prep, make("fastv", ratio=round(1 - r, 6), layer=2), max_new_tokens=1)
        assert free["tokens"]["kept_at_layer"] == row["keep_fastv"] < v
        aware = 4 * (1 - r)
        dagger = make("vanilla") if aware >= 1 else make("fastv", ratio=round(aware, 6), layer=2)
        kept = engine.run(lm, prep, dagger, max_new_tokens=1)["tokens"]["kept_at_layer"]
        assert kept == row["keep_fastv_dagger"] and (kept == v) == (r <= 0.75)
        assert row["trr_fastv_dagger"] == pytest.approx(4 * v / kept)


def test_table6_runs_each_doc_once_through_the_vision_tower_and_equals_separate_runs(engine, loaded, checkpoints):
    """Every method of a doc shares one compare (the tower runs once per doc); the accuracies are separate runs'."""
    from explorer.settings import EVAL

    lm = loaded["qwen2_vl"]
    calls = []
    handle = lm.family.vision_modules(lm.model)[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        _, rows = table6(engine, str(checkpoints["qwen2_vl"]), "pope", reductions=(0.5, 0.9), n=2, max_new_tokens=2)
    finally:
        handle.remove()
    assert len(calls) == 2
    task, src = task_mod.get("pope"), open_source("pope", "toy", 2, EVAL.seed)
    docs = [src[i] for i in range(len(src))]
    prepared = [engine.prepare(lm, task.doc_to_visual(d), task.doc_to_text(d)) for d in docs]

    def alone(method) -> float:
        return task_mod.score(task, [{"metrics": task.process_results(d, engine.run(lm, p, method, 2))}
                                     for d, p in zip(docs, prepared)])

    assert rows[0]["acc_fastv"] == alone(make("vanilla"))
    assert rows[2]["acc_fastv"] == alone(make("fastv", ratio=0.1, layer=EVAL.layer))
