"""Shared-prefix compare (runtime/shared.py) == every method run alone, for every registered method."""
from __future__ import annotations

import pytest
import torch
from explorer.testing import picture

from explorer.methods import REGISTRY, MethodError, make
from explorer.runtime.shared import SHARED, SOLO, SOLO_PREFILL, decode_groups, run_methods

PROMPT = "what is the colour of the shape ?"
FAMILIES = ["llava", "llava_next", "qwen2_vl"]


def every_method(layouts) -> list:
    """Each registered method at a small budget (4 tokens per image), default knobs."""
    return [make(name, keep=min(4, layouts[0].count)) for name in REGISTRY]


def runnable(loaded, methods):
    """The methods this family can run, each fitted to the model's depth as the engine runs it."""
    depth = len(loaded.family.lm_layers(loaded.model))
    return [m.for_depth(depth) for m in methods if not any(loaded.family.lacks(need) for need in m.requires)]


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_runs_equal_solo_runs_for_every_method(engine, loaded, family):
    lm = loaded[family]
    prep = engine.prepare(lm, [picture(0)], PROMPT)
    methods = [m for m in runnable(lm, every_method(prep.layouts))
               if not getattr(m, "resizes_input", False)]
    args = (lm.family, lm.model, prep.inputs, prep.layouts, methods, 6, set())
    shared = run_methods(*args, keep_logits=True)
    batched = [shared[m].decoded[0] for m in methods if shared[m].error is None and shared[m].decoded[0].batched_steps]
    assert len(batched) > 2
    assert len({tuple(d.kv_lengths) for d in batched}) > 1  # unequal caches decoded together (padded, masked)
    solo = run_methods(*args, solo=True, keep_logits=True)
    forked = [m.name for m in methods if shared[m].timing == SHARED]
    assert "fastv" in forked and "random" in forked and "vanilla" in forked, forked
    assert {"divprune", "cdpruner"} <= set(forked), forked  # pre-LLM: fork at the LM's input
    if family != "qwen2_vl":  # MustDrop merges in the tower: run alone, then its decode joins the batches
        assert [shared[m].timing for m in methods if m.name == "mustdrop"] == [SOLO_PREFILL]
    if family != "qwen2_vl":  # [CLS]-scored, before the projector (VisionZip's merges re-run the projector)
        assert {"fastervlm", "visionzip", "vispruner"} <= set(forked), forked
    for method in methods:
        a, b = shared[method], solo[method]
        assert b.timing == SOLO
        assert (a.error is None) == (b.error is None), method.name
        if a.error is not None:
            assert str(a.error) == str(b.error)
            continue
        x, y = a.decoded[0], b.decoded[0]
        assert x.tokens == y.tokens, method.name
        assert torch.allclose(x.prefill_logits, y.prefill_logits, atol=1e-5), method.name
        assert len(x.step_logits) == len(y.step_logits)
        for p, q in zip(x.step_logits, y.step_logits):
            assert torch.allclose(p, q, atol=1e-5), method.name
        assert x.kv_lengths == y.kv_lengths, method.name
        for sa, sb in zip(a.plans[0].selections, b.plans[0].selections):
            for u, v in zip(sa, sb):
                assert torch.equal(u.kept, v.kept), method.name
                assert (u.merge is None) == (v.merge is None) and (u.merge is None or torch.equal(u.merge, v.merge))


@pytest.mark.parametrize("family", FAMILIES)
def test_compare_results_equal_solo_compare(engine, loaded, family):
    lm = loaded[family]
    methods = [make(n, keep=4) for n in ("vanilla", "fastv", "pooling", "sparsevlm", "dart", "divprune")]
    shared = engine.compare([picture(1)], PROMPT, methods, model_id=lm.model_id, max_new_tokens=4)
    solo = engine.compare([picture(1)], PROMPT, methods, model_id=lm.model_id, max_new_tokens=4, solo=True)
    for a, b in zip(shared["results"], solo["results"]):
        assert a["status"] == b["status"]
        if a["status"] != "ok":
            continue
        assert (a["answer"], a["images"], a["tokens"], a["kv_cache_bytes"]) == \
               (b["answer"], b["images"], b["tokens"], b["kv_cache_bytes"]), a["method"]
        assert b["timings"]["timing"] == "solo"
    timing = {r["method"]: r["timings"]["timing"] for r in shared["results"] if r["status"] == "ok"}
    assert timing["vanilla"] == timing["fastv"] == "shared-prefix"


def test_vanilla_from_the_trunk_equals_stock_generate(engine, loaded):
    lm = loaded["qwen2_vl"]
    prep = engine.prepare(lm, [picture(0)], PROMPT)
    vanilla = make("vanilla")
    runs = run_methods(lm.family, lm.model, prep.inputs, prep.layouts, [vanilla, make("fastv", keep=3)], 8, set())
    with torch.no_grad():
        stock = lm.model.generate(**prep.inputs, max_new_tokens=8, do_sample=False)
    assert runs[vanilla].timing == SHARED
    assert runs[vanilla].decoded[0].tokens == stock[0, prep.prompt_len:].tolist()


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_the_vision_tower_runs_once_for_every_forking_method(engine, loaded, family):
    lm = loaded[family]
    prep = engine.prepare(lm, [picture(0)], PROMPT)
    methods = [m for m in runnable(lm, every_method(prep.layouts)) if m.name != "mustdrop"]  # merges in the tower
    calls = []
    handle = lm.model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        runs = run_methods(lm.family, lm.model, prep.inputs, prep.layouts, methods, 2, set())
    finally:
        handle.remove()
    assert all(r.timing == SHARED for r in runs.values()) and len(calls) == 1


def test_a_failing_method_leaves_the_others(engine, loaded):
    """A method refused on this model during its run fails alone; the others still run from the shared prefill."""
    lm = loaded["llava_next"]
    prep = engine.prepare(lm, [picture(0)], PROMPT)
    deep = make("mustdrop", keep=3, tower_layer=64)  # a legal knob, past this vision tower's depth: refused in the run
    fastv, vanilla = make("fastv", keep=3), make("vanilla")
    runs = run_methods(lm.family, lm.model, prep.inputs, prep.layouts, [vanilla, deep, fastv], 3, set())
    assert isinstance(runs[deep].error, MethodError)
    assert runs[fastv].error is None and runs[fastv].timing == SHARED and len(runs[fastv].decoded[0].tokens) == 3
    assert runs[vanilla].error is None
    result = engine.compare([picture(0)], PROMPT, [vanilla, deep, fastv], model_id=lm.model_id, max_new_tokens=3)
    assert [r["status"] for r in result["results"]] == ["ok", "not_applicable", "ok"]


def test_hooks_removed_after_a_shared_compare(engine, loaded):
    lm = loaded["llava"]
    def hooks():
        return [(id(m), tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for m in lm.model.modules()]

    prep = engine.prepare(lm, [picture(0)], PROMPT)
    methods = [m for m in every_method(prep.layouts) if not engine.not_applicable(lm, m)]
    engine.compare([picture(0)], PROMPT, [make("vanilla")], model_id=lm.model_id, max_new_tokens=1)
    before = hooks()  # after a first forward: transformers' own output-capturing hooks are installed then
    engine.compare([picture(0)], PROMPT, methods, model_id=lm.model_id, max_new_tokens=2)
    assert hooks() == before


def test_cli_solo_switch(checkpoints, tmp_path, capsys):
    import json

    from explorer.cli import main

    path = tmp_path / "p.png"
    picture(0).save(path)
    argv = ["run", "--image", str(path), "--prompt", PROMPT, "--methods", "vanilla,fastv", "--keep", "3",
            "--model", str(checkpoints["llava"]), "--max-new-tokens", "3", "--json"]
    outs = []
    for extra in ([], ["--solo"]):
        assert main(argv + extra) == 0
        outs.append(json.loads(capsys.readouterr().out))
    shared, solo = outs
    assert [r["timings"]["timing"] for r in shared["results"]] == ["shared-prefix"] * 2
    assert [r["timings"]["timing"] for r in solo["results"]] == ["solo"] * 2
    assert [r["answer"] for r in shared["results"]] == [r["answer"] for r in solo["results"]]


def test_decode_groups_trade_padding_against_one_weights_read_per_batch():
    rows = [[600, 600, 100, 100], [100, 100, 100, 100], [600, 600, 100, 100], [100, 100, 100, 100], [600] * 4]
    assert sorted(map(sorted, decode_groups(rows, None))) == [[0, 2], [1, 3], [4]]  # equal lengths only
    assert sorted(map(sorted, decode_groups(rows, 1e9))) == [[0, 1, 2, 3, 4]]  # weights dominate: one batch
    assert all(len({tuple(rows[r]) for r in g}) == 1 for g in decode_groups(rows, 0.0))  # padding never pays
    # weights worth 1000 cached tokens: the short rows together, the FastV-like pair together, the long row alone
    assert sorted(map(sorted, decode_groups(rows, 1000.0))) == [[0, 2], [1, 3], [4]]
