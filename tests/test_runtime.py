"""Correctness of the runtime inside stock transformers models, for every family."""
from __future__ import annotations

import pytest
import torch
from explorer.testing import FAMILIES, picture
from transformers import AutoModelForImageTextToText

from explorer.methods import Selection, make
from explorer.runtime.decode import greedy
from explorer.runtime.pruner import Pruner

PROMPT = "what is the colour of the shape ?"
ANSWER = [20, 25, 30, 21, 22, 23]  # plain word tokens of the tiny vocabulary


def prepared(engine, loaded, family, n_images=1):
    lm = loaded[family]
    return lm, engine.prepare(lm, [picture(i) for i in range(n_images)], PROMPT)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_logits_identical_to_stock(engine, loaded, family):
    lm, prep = prepared(engine, loaded, family)
    with torch.no_grad():
        stock = lm.model(**prep.inputs).logits
        for name in ("fastv", "pooling", "random"):
            method = make(name, keep=prep.layouts[0].count, layer=2)
            with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len):
                pruned = lm.model(**prep.inputs).logits
            assert torch.equal(stock, pruned), name


@pytest.mark.parametrize("family", FAMILIES)
def test_vanilla_greedy_equals_stock_generate(engine, loaded, family):
    lm, prep = prepared(engine, loaded, family)
    ours = engine.run(lm, prep, make("vanilla"), max_new_tokens=8)
    with torch.no_grad():
        stock = lm.model.generate(**prep.inputs, max_new_tokens=8, do_sample=False)
    expected = lm.processor.batch_decode(stock[:, prep.prompt_len:], skip_special_tokens=True)[0].strip()
    assert ours["answer"] == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_probe_rows_equal_eager_attention(engine, loaded, checkpoints, family):
    lm, prep = prepared(engine, loaded, family)
    eager = AutoModelForImageTextToText.from_pretrained(checkpoints[family], attn_implementation="eager").eval()
    with torch.no_grad():
        weights = eager(**prep.inputs, output_attentions=True).attentions  # per layer (1, H, L, L)
    for layer in (1, 3):
        method = make("fastv", keep=4, layer=layer, query="all")
        with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len) as pruner, torch.no_grad():
            lm.model(**prep.inputs)
        expected = weights[layer - 1][0].mean(0)  # (L, L), heads averaged
        assert lm.model.config._attn_implementation == "sdpa"
        assert torch.allclose(pruner.probes.rows[layer]["queries"], expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 2])
def test_cached_decode_equals_teacher_forced_pruned_forward(engine, loaded, family, layer):
    """Decode positions after a cut (incl. Qwen2-VL's M-RoPE deltas) match a forward over prompt + answer."""
    lm, prep = prepared(engine, loaded, family)
    method = make("random", keep=5, layer=layer, seed=3)
    with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len) as pruner:
        out = greedy(lm.model, lm.family, prep.inputs, 6, set(), keep_logits=True, forced=ANSWER)
    assert out.tokens == ANSWER
    extra = torch.tensor([ANSWER[:-1]])
    inputs = dict(prep.inputs)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], 1)
    full_len = inputs["input_ids"].shape[1]
    with Pruner(lm.family, lm.model, method, prep.layouts, full_len, fixed=pruner.plan.selections), torch.no_grad():
        logits = lm.model(**inputs).logits[0, -len(ANSWER):]  # (6, V): the text tail is never cut
    decoded = torch.stack([out.prefill_logits, *out.step_logits])
    assert torch.allclose(decoded, logits, atol=1e-5)


QWEN = [f for f in FAMILIES if f.startswith("qwen")]  # 3-D M-RoPE with rope deltas


@pytest.mark.parametrize("family", ["llava", "llava_onevision", *QWEN])
def test_cut_at_layer_zero_equals_lm_on_shortened_input(engine, loaded, family):
    lm, prep = prepared(engine, loaded, family)
    captured = {}
    layer0 = lm.family.lm_layers(lm.model)[0]
    handle = layer0.register_forward_pre_hook(
        lambda m, a, kw: captured.update(h=(a[0] if a else kw["hidden_states"]).clone(),
                                         pos=kw["position_embeddings"]), with_kwargs=True)

    def grab_deepstack(module, args, kwargs):  # registered before the runtime's hooks: sees the stock kwargs
        if kwargs.get("deepstack_visual_embeds") is not None:
            captured.update({k: kwargs[k] for k in ("deepstack_visual_embeds", "visual_pos_masks")})

    text_model = lm.family.language_model(lm.model).register_forward_pre_hook(grab_deepstack, with_kwargs=True)
    method = make("random", keep=3, layer=0, seed=1)
    with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len) as pruner, torch.no_grad():
        pruned = lm.model(**prep.inputs).logits
    handle.remove()
    text_model.remove()
    order = pruner.plan.order
    deepstack = {}  # Qwen3-VL: the features the stock text model adds, for the image tokens kept
    if "deepstack_visual_embeds" in captured:
        visual = torch.nonzero(captured["visual_pos_masks"][0]).flatten()
        kept = torch.isin(visual, order)
        deepstack = {"visual_pos_masks": captured["visual_pos_masks"][:, order],
                     "deepstack_visual_embeds": [f[kept] for f in captured["deepstack_visual_embeds"]]}
    if family in QWEN:  # 3-D positions of the kept tokens, as the model computed them
        positions = lm.model.model.get_rope_index(prep.inputs["input_ids"], image_grid_thw=prep.inputs["image_grid_thw"],
                                                  mm_token_type_ids=prep.inputs["mm_token_type_ids"])[0][..., order]
    else:
        positions = order[None]
    with torch.no_grad():
        hidden = lm.model.model.language_model(inputs_embeds=captured["h"][:, order], position_ids=positions,
                                               **deepstack)
        direct = lm.model.lm_head(hidden.last_hidden_state)
    assert torch.allclose(pruned, direct, atol=1e-5)


@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("n_images", [1, 2])
def test_decode_positions_follow_the_models_own_rope_index(engine, loaded, family, n_images):
    """After a cut, each decode step's 3-D position is the one the model's get_rope_index gives that token in
    the full (prompt + answer) sequence: the rope deltas of the unpruned prompt, not the pruned length."""
    lm, prep = prepared(engine, loaded, family, n_images)
    with Pruner(lm.family, lm.model, make("random", keep=2, layer=2), prep.layouts, prep.prompt_len):
        greedy(lm.model, lm.family, prep.inputs, 1, set())  # the prefill sets the model's rope deltas
    ids = torch.cat([prep.inputs["input_ids"], torch.tensor([ANSWER])], 1)
    types = torch.cat([prep.inputs["mm_token_type_ids"], torch.zeros(1, len(ANSWER), dtype=torch.long)], 1)
    full = lm.model.model.get_rope_index(ids, image_grid_thw=prep.inputs["image_grid_thw"],
                                         mm_token_type_ids=types)[0]  # (3, 1, L + answer)
    for step in range(len(ANSWER)):
        ours = lm.family.decode_position_ids(lm.model, prep.prompt_len, step)  # (3, 1, 1)
        assert torch.equal(ours[:, 0, 0], full[:, 0, prep.prompt_len + step])


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_image_prunes_each_image_in_its_own_span(engine, loaded, family):
    lm, prep = prepared(engine, loaded, family, n_images=2)
    assert len(prep.layouts) == 2 and prep.layouts[0].start + prep.layouts[0].count <= prep.layouts[1].start
    with Pruner(lm.family, lm.model, make("fastv", keep=3), prep.layouts, prep.prompt_len) as pruner:
        greedy(lm.model, lm.family, prep.inputs, 1, set())
    order = pruner.plan.order
    for img in prep.layouts:
        inside = ((order >= img.start) & (order < img.start + img.count)).sum()
        assert int(inside) == 3
    result = engine.run(lm, prep, make("fastv", keep=3), max_new_tokens=2)
    assert [len(i["kept"]) for i in result["images"]] == [3, 3]


def test_hooks_removed_and_runs_independent(engine, loaded):
    lm, prep = prepared(engine, loaded, "llava")
    hooks = lambda: [(id(m), tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for m in lm.model.modules()]  # noqa: E731
    before = hooks()
    alone = engine.run(lm, prep, make("fastv_window", keep=6), max_new_tokens=4)
    engine.run(lm, prep, make("alpha", keep=9, alpha=0.3), max_new_tokens=4)
    after = engine.run(lm, prep, make("fastv_window", keep=6), max_new_tokens=4)
    assert alone["images"] == after["images"] and alone["answer"] == after["answer"]
    assert hooks() == before  # transformers' own output-capturing hooks stay; ours are gone


def test_kv_cache_holds_kept_tokens_after_cut(engine, loaded):
    lm, prep = prepared(engine, loaded, "llava")
    method = make("pooling", keep=4, layer=2)
    with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len):
        out = greedy(lm.model, lm.family, prep.inputs, 1, set())
    n = prep.layouts[0].count
    assert out.kv_lengths == [prep.prompt_len] * 2 + [prep.prompt_len - n + 4] * 2


def test_merged_tokens_enter_at_their_group_position(engine, loaded):
    lm, prep = prepared(engine, loaded, "llava")
    result = engine.run(lm, prep, make("avgpool", keep=4), max_new_tokens=2)
    entry = result["images"][0]
    assert entry["kept"] == [] and len(entry["groups"]) == 4
    assert sorted(i for g in entry["groups"] for i in g) == list(range(entry["image_tokens"]))


def test_cut_with_an_explicit_mask_tensor(engine, loaded, checkpoints):
    """Eager attention hands every layer a 4-D mask tensor: the cut slices it (prefill and decode) too."""
    lm, prep = prepared(engine, loaded, "llava")
    eager = AutoModelForImageTextToText.from_pretrained(checkpoints["llava"], attn_implementation="eager").eval()
    method = make("random", keep=5, layer=2, seed=2)
    with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len) as sdpa_run:
        sdpa = greedy(lm.model, lm.family, prep.inputs, 4, set(), keep_logits=True, forced=ANSWER[:4])
    with Pruner(lm.family, eager, method, prep.layouts, prep.prompt_len) as eager_run:
        out = greedy(eager, lm.family, prep.inputs, 4, set(), keep_logits=True, forced=ANSWER[:4])
    assert torch.equal(sdpa_run.plan.order, eager_run.plan.order)
    assert torch.allclose(torch.stack([sdpa.prefill_logits, *sdpa.step_logits]),
                          torch.stack([out.prefill_logits, *out.step_logits]), atol=1e-5)
