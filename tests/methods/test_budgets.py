"""Budgets are honest for every advanced method and family: kept counts, layer-averaged counts, FLOPs tokens."""
import pytest

from explorer.methods import MethodError, make

from .conftest import run_plan

CASES = {  # method -> knobs; layer-averaged image tokens follow from the cut layers (tiny models: 4 layers)
    "dart": dict(layer=2),
    "divprune": dict(),
    "fastervlm": dict(),
    "visionzip": dict(),
    "sparsevlm": dict(layers=(0, 1, 2)),  # cuts at the inputs of layers 1, 2, 3 (tiny models: 4 layers)
}
CLS_METHODS = ("fastervlm", "visionzip")


def expected_per_layer(method, layout, k, n_layers=4):
    """Image tokens entering each layer, from the method's own stages and per-segment schedule."""
    from explorer.runtime.pruner import segment_budgets
    stages = method.stages(n_layers)
    ks = segment_budgets(k, layout)
    out = []
    for i in range(n_layers):
        done = [s for s, st in enumerate(stages) if st.layer <= i]
        out.append(layout.count if not done else sum(
            min(seg.count, method.stage_budget(done[-1], seg.count, kk)) for seg, kk in zip(layout.segments, ks)))
    return out


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl"])
@pytest.mark.parametrize("name", list(CASES))
def test_budget_exact(engine, tiny, family, name):
    loaded, prepared = tiny[family]
    n = prepared.layouts[0].count
    k = 2 if family == "qwen2_vl" else 7
    method = make(name, keep=k, **CASES[name])
    if family == "qwen2_vl" and name in CLS_METHODS:
        with pytest.raises(MethodError, match=r"no \[CLS\]"):
            engine.run(loaded, prepared, method, max_new_tokens=2)
        return
    result = engine.run(loaded, prepared, method, max_new_tokens=2)
    image = result["images"][0]
    assert len(image["kept"]) + len(image.get("groups", [])) == k
    per_layer = expected_per_layer(method, prepared.layouts[0], k)
    tokens = result["tokens"]
    assert tokens["kept_at_layer"] == k and tokens["per_layer"] == per_layer
    assert tokens["layer_averaged"] == round(sum(per_layer) / len(per_layer), 2)
    text = prepared.prompt_len - n
    assert result["flops"]["tokens_per_layer"] == [text + m for m in per_layer]
    assert result["kv_lengths"] == [text + m for m in per_layer]
    assert [s["layer"] for s in image["survivors"]] == [c["layer"] for c in tokens["per_cut"]]
    survivors = image["survivors"][-1]["kept"]
    assert len(survivors) == k and survivors == sorted(set(survivors))
    for before, after in zip(image["survivors"], image["survivors"][1:]):  # shrink monotonically
        assert set(after["kept"]) <= set(before["kept"]) and len(after["kept"]) <= len(before["kept"])
    if "groups" in image:  # merged groups are disjoint, never contain a kept token, start at a survivor
        flat = [t for g in image["groups"] for t in g]
        assert len(flat) == len(set(flat)) and not set(flat) & set(image["kept"])
        assert sorted(image["kept"] + [g[0] for g in image["groups"]]) == survivors
    assert result["positions"].startswith("renumbered" if method.pre_llm and family != "qwen2_vl" else "original")


def test_pre_llm_equals_lm_on_shortened_input(tiny):
    """A pre-LLM cut with renumbered positions equals running the LM on the kept embeddings (prefill and a
    cached decode step)."""
    import torch
    loaded, prepared = tiny["llava"]
    model = loaded.model
    captured = {}

    def grab(module, args, kwargs):  # registered before the cut's hook, so it sees the full sequence
        captured.setdefault("x", (args[0] if args else kwargs["hidden_states"]).clone())

    handle = loaded.family.lm_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    plan, decoded = run_plan(loaded, prepared, make("divprune", keep=5), steps=2)
    handle.remove()
    assert len(plan.order) == prepared.prompt_len - prepared.layouts[0].count + 5
    embeds = captured["x"][:, plan.order]  # the kept embeddings, renumbered 0..L'-1 below
    token = int(decoded.prefill_logits.argmax())
    with torch.no_grad():
        seq = torch.cat([embeds, model.model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
        ref = model.lm_head(model.model.language_model(inputs_embeds=seq).last_hidden_state)[0]
    assert torch.allclose(ref[-2], decoded.prefill_logits, atol=1e-5)
    assert torch.allclose(ref[-1], decoded.step_logits[0], atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_mustdrop_budget_and_kv_cache_cut(engine, tiny, family):
    """Vision merge (data-dependent count), exact k after the LLM cut, and a KV cache holding only the final
    survivors in every layer after prefill, including the layers before K."""
    loaded, prepared = tiny[family]
    n, k = prepared.layouts[0].count, 6
    result = engine.run(loaded, prepared, make("mustdrop", keep=k, layers=(1,), similarity=0.5), max_new_tokens=3)
    image, tokens = result["images"][0], result["tokens"]
    assert len(image["kept"]) + len(image.get("groups", [])) == k == tokens["kept_at_layer"]
    per_layer = tokens["per_layer"]
    assert per_layer[-1] == k and per_layer == sorted(per_layer, reverse=True) and per_layer[0] <= n
    assert tokens["layer_averaged"] == round(sum(per_layer) / len(per_layer), 2)
    text = prepared.prompt_len - n
    assert result["kv_lengths"] == [text + k] * 4  # the cache is cut to the final kept set everywhere
    assert result["flops"]["tokens_per_layer"] == [text + m for m in per_layer]
    first, last = image["survivors"]
    assert set(last["kept"]) <= set(first["kept"])
    if family == "llava":
        assert per_layer[0] < n  # the vision merge fired on this image at similarity 0.5



def test_scoring_overhead_counts_the_last_cut(engine, loaded):
    """Pre-LLM methods score and cut at one stage; that stage's time must reach the result."""
    from PIL import Image

    from explorer.methods import make
    lm = loaded["llava"]
    prep = engine.prepare(lm, [Image.new("RGB", (64, 48), (90, 140, 200))], "what is the colour ?")
    for name in ("divprune", "dart"):
        assert engine.run(lm, prep, make(name, keep=8), max_new_tokens=1)["timings"]["scoring_ms"] > 0
