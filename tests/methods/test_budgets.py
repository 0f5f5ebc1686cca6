"""Budgets are honest for every advanced method and family: kept counts, layer-averaged counts, FLOPs tokens."""
import pytest

from explorer.methods import MethodError, make

from explorer.testing import run_plan

CASES = {  # method -> knobs; layer-averaged image tokens follow from the cut layers (tiny models: 4 layers)
    "dart": dict(layer=2),
    "divprune": dict(),
    "fastervlm": dict(),
    "visionzip": dict(),
    "sparsevlm": dict(layers=(0, 1, 2)),  # cuts at the inputs of layers 1, 2, 3 (tiny models: 4 layers)
}
CLS_METHODS = ("fastervlm", "visionzip")
NO_CLS = ("qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen3_vl")  # towers without a [CLS] token


def expected_per_layer(method, layout, k, n_layers=4):
    """Image tokens entering each layer: after a cut, the image's count from the method's own stage budget on the
    whole image (split over LLaVA-NeXT's ranking units by size, each at most its tokens)."""
    from explorer.runtime.spans import image_budget, unit_budgets, units
    stages = method.stages(n_layers)
    unit_list = units(method, layout)
    sizes = [sum(layout.segments[s].count for s in unit) for unit in unit_list]
    out = []
    for i in range(n_layers):
        done = [s for s, st in enumerate(stages) if st.layer <= i]
        out.append(layout.count if not done else sum(
            min(n, b) for n, b in zip(sizes, unit_budgets(image_budget(method, layout, done[-1]), layout, unit_list))))
    return out


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen3_vl"])
@pytest.mark.parametrize("name", list(CASES))
def test_budget_exact(engine, tiny, family, name):
    loaded, prepared = tiny[family]
    n = prepared.layouts[0].count
    k = 2 if family.startswith("qwen") else 7
    method = make(name, keep=k, convention="final", **CASES[name])  # "final": exactly k after the last cut
    if family in NO_CLS and name in CLS_METHODS:
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
    assert result["positions"].startswith("renumbered" if method.pre_llm and not family.startswith("qwen")
                                          else "original")


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


# ---- budget conventions: "paper" = the authors' schedules, "final" = exactly keep --------------------------------

def _synthetic(n: int, seed: int = 0, d: int = 8):
    """A view of n tokens with every field the LLM-side and vision-side methods read (random, seeded)."""
    import torch

    from explorer.methods import SegmentView
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g)  # (n, d)
    return SegmentView(hidden=hidden, grid=(1, n), last_hidden=hidden[-1], normed=hidden,
                       key_norms=torch.rand(n, generator=g), text_hidden=torch.randn(6, d, generator=g),
                       text_key_norms=torch.rand(6, generator=g), text_attention=torch.rand(3, n, generator=g),
                       cls_attention=torch.rand(n, generator=g), vision_keys=torch.randn(n, d, generator=g),
                       cls_feature=torch.randn(d, generator=g))


def _sparsevlm_cuts(method, n: int, k: int) -> list[tuple[int, int]]:
    """(kept, clusters) after each of the three cuts, each cut run on the previous cut's survivors."""
    import dataclasses
    out, alive = [], n
    for stage in range(3):
        budget = min(alive, method.stage_budget(stage, n, k))
        sel = method.select_stage(stage, dataclasses.replace(_synthetic(alive, stage)), budget)
        out.append((sel.kept.numel(), 0 if sel.merge is None else sel.merge.shape[0]))
        alive = sel.size
    return out


@pytest.mark.parametrize("keep, expected", [  # Gumpest/SparseVLMs score.py lists + modelling_sparse_llama.py
    (192, [(300, 9), (200, 4), (110, 3)]),      # 309 / 204 / 113
    (128, [(303, 9), (110, 7), (36, 3)]),       # 312 / 117 / 39
    (64, [(66, 16), (30, 2), (17, 1)]),         # 82 / 32 / 18
])
def test_sparsevlm_paper_lists_on_576(keep, expected):
    method = make("sparsevlm", keep=keep)  # "paper" is the default
    assert _sparsevlm_cuts(method, 576, keep) == expected
    assert make("sparsevlm", keep=keep + 10).stage_budget(0, 576, keep + 10) == sum(expected[0])  # nearest list


def test_sparsevlm_final_ends_at_keep():
    method = make("sparsevlm", keep=64, convention="final")  # its own three layers: three cuts
    cuts = _sparsevlm_cuts(method, 576, 64)
    assert [a + b for a, b in cuts] == [277, 133, 64] and cuts[-1] == (61, 3)


def test_sparsevlm_recycled_share_is_the_authors_at_2000_plus_tokens():
    """At 576 tokens the authors' "64" recycles 16 of 82 tokens at the first cut; at 2242 tokens their formula
    would form 66 clusters. Both conventions keep the 576-token share: paper 66 + 16 again, and a single final
    cut to 64 is 52 chosen by score + 12 clusters (it was 1-2 chosen + 62 merged)."""
    assert _sparsevlm_cuts(make("sparsevlm", keep=64), 2242, 64) == [(66, 16), (30, 2), (17, 1)]
    final = make("sparsevlm", keep=64, convention="final")
    assert final.recycled(0, 2242, 64) == round(64 * 16 / 82) == 12
    sel = final.select_stage(0, _synthetic(2242), 64)
    assert (sel.kept.numel(), sel.merge.shape[0]) == (52, 12)
    # LLaVA-NeXT at 2242 tokens (base 576 + high-res 1666), ranked as the authors' code: one ranking over the span,
    # 66 + 16 clusters at the first cut; ranking="per_grid" (budget split 16 + 48): the lists and the cluster cap
    # scale with each grid's share, so the image keeps the same 82 at the first cut, 16 of them clusters.
    paper = make("sparsevlm", keep=64)
    assert paper.stage_budget(0, 2242, 64) == 82 and paper.recycled(0, 2242, 82) == 16
    assert paper.stage_budget(0, 576, 16) + paper.stage_budget(0, 1666, 48) == 82
    assert paper.recycled(0, 576, 20) + paper.recycled(0, 1666, 62) == 16


def test_dart_paper_keeps_pivots_plus_eight_multiple():
    assert make("dart", keep=64).stage_budget(0, 576, 64) == 4 + 8 * 8 == 68
    assert make("dart", keep=60).stage_budget(0, 576, 60) == 4 + 8 * 7
    assert make("dart", keep=64, convention="final").stage_budget(0, 576, 64) == 64
    assert make("dart", keep=64).select(_synthetic(576), 68).kept.numel() == 68


@pytest.mark.parametrize("convention, kept, groups", [("paper", 53, 11), ("final", 54, 10)])
def test_visionzip_cls_plus_dominant_plus_contextual(convention, kept, groups):
    """The authors' "64": [CLS] + 53 dominant + 10 contextual (paper); 54 + 10 patches, no [CLS] (final)."""
    import torch
    view = _synthetic(576)
    sel = make("visionzip", keep=64, convention=convention).select(view, 64)
    assert (sel.kept.numel(), sel.merge.shape[0], sel.size) == (kept, groups, 64)
    assert torch.equal(sel.merged[-1], view.cls_feature) == (convention == "paper")


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_budget_conventions_end_to_end(engine, tiny, family):
    """Through the engine: per-cut token counts follow the convention; VisionZip's [CLS] reaches the LM as
    projector([CLS] row of the projector's input layer)."""
    import torch
    loaded, prepared = tiny[family]
    k = 16 if family == "llava" else 12
    runs = {(name, conv): engine.run(loaded, prepared, make(name, keep=k, convention=conv), max_new_tokens=1)
            for name in ("dart", "visionzip") for conv in ("paper", "final")}
    for (name, conv), result in runs.items():
        assert result["convention"] == conv and result["status"] == "ok"
    assert runs["dart", "final"]["tokens"]["kept_at_layer"] == k
    if family == "llava":
        assert runs["dart", "paper"]["tokens"]["kept_at_layer"] == 4 + 8 * (k // 8)
    assert runs["visionzip", "paper"]["tokens"]["kept_at_layer"] == k == runs["visionzip", "final"]["tokens"]["kept_at_layer"]
    if family != "llava":
        return
    model, seen = loaded.model, {}
    h1 = loaded.family.vision_feature_layer(model).register_forward_hook(
        lambda m, a, out: [seen.setdefault("cls", (out[0] if isinstance(out, tuple) else out)[0, 0].clone()), None][1])
    h2 = loaded.family.lm_layers(model)[0].register_forward_pre_hook(
        lambda m, a, kw: [seen.setdefault("lm", (a[0] if a else kw["hidden_states"]).clone()), None][1], with_kwargs=True)
    run_plan(loaded, prepared, make("visionzip", keep=k), steps=1)
    h1.remove(), h2.remove()
    with torch.no_grad():
        cls = model.model.multi_modal_projector(seen["cls"][None, None])[0, 0]
    assert torch.isclose(seen["lm"][0], cls, atol=1e-5).all(-1).sum() == 1  # exactly one input row is [CLS]
