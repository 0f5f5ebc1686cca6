"""MustDrop: hand-checked window merge and dual-threshold filter, the merge inside the CLIP tower, the Qwen2-VL
refusal, and decoding after the KV cut equal to a manual forward with the same cache policy."""
import math

import pytest
import torch

from explorer.methods import NotApplicable, SegmentView, make
from explorer.runtime.pruner import Pruner
from explorer.runtime.decode import greedy


def test_window_similarity_by_hand():
    """2x2 window e1, e1, e2, e2: 4 of the 12 ordered off-diagonal pairs have cosine 1, the rest 0 -> 1/3."""
    m = make("mustdrop", keep=1, window=2)
    e1, e2 = torch.eye(2)
    x = torch.stack([e1, e1, e2, e2])[None]  # (1, 4, 2): a 2x2 grid, one window
    assert m.windows((2, 2)).tolist() == [[0, 1, 2, 3]]
    assert torch.allclose(m.window_similarity(x, m.windows((2, 2))), torch.tensor([[1 / 3]]))


def test_identical_windows_are_merged():
    """6x6 grid, 3x3 windows: windows 0 and 3 are constant (similarity 1 and ~0.99), 1 and 2 random; at 0.8 exactly the
    (near-)constant ones merge; a budget that allows one merge keeps the most similar (ties: lower window)."""
    m = make("mustdrop", keep=1, similarity=0.8)
    wins = m.windows((6, 6))
    assert wins[0].tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14] and wins[3].tolist() == [21, 22, 23, 27, 28, 29, 33, 34, 35]
    x = torch.randn(1, 36, 16, generator=torch.Generator().manual_seed(0))
    x[0, wins[0]] = torch.randn(16)
    x[0, wins[3]] = torch.randn(16) + 0.1 * torch.randn(9, 16, generator=torch.Generator().manual_seed(1))
    sim = m.window_similarity(x, wins)
    assert torch.allclose(sim[0, 0], torch.tensor(1.0)) and 0.8 < sim[0, 3] < sim[0, 0]
    assert (sim[0, [1, 2]] < 0.8).all()
    every = torch.ones(1, 4, dtype=torch.bool)
    assert [c.tolist() for c in m.choose_windows(sim, every, lambda c: True)] == [[0, 3]]
    assert [c.tolist() for c in m.choose_windows(sim, every, lambda c: len(c[0]) <= 1)] == [[0]]
    assert [c.tolist() for c in m.choose_windows(sim, every & torch.tensor([False, True, True, True]),
                                                 lambda c: True)] == [[3]]
    # the batch shares r: a second tile with no similar window stops the merge everywhere (the code's min)
    two = torch.cat([sim, torch.zeros(1, 4)])
    assert [c.tolist() for c in m.choose_windows(two, every.expand(2, 4), lambda c: True)] == [[], []]


def test_dual_threshold_filter_by_hand():
    """g = column sums, i = column maxima; dropped iff g < 0.2 * sum(g) and i < 0.3; key tokens always stay."""
    att = torch.tensor([[0.50, 0.05, 0.05, 0.10, 0.30],
                        [0.40, 0.10, 0.02, 0.18, 0.30]])  # g = .9 .15 .07 .28 .6 (sum 2.0), i = .5 .1 .05 .18 .3
    m = make("mustdrop", keep=1, global_thr=0.2, individual_thr=0.3)
    s = m.threshold_score(att)
    assert (s >= 1).tolist() == [True, False, False, False, True]  # 0.28 < 0.4 and 0.18 < 0.3: token 3 goes
    keys = torch.tensor([0.0, 0.0, 0.7, 0.0, 0.0])  # token 2 is in the key set
    view = SegmentView(hidden=torch.zeros(5, 4), grid=(1, 5), last_hidden=torch.zeros(4), text_attention=att,
                       cls_attention=keys)
    assert m.filter(view, 2, last=False).kept.tolist() == [0, 2, 4]  # threshold survivors + key set (>= budget)
    assert m.filter(view, 2, last=True).kept.tolist() == [0, 2]  # exact budget: key, then the highest s
    assert m.filter(view, 4, last=True).kept.tolist() == [0, 2, 3, 4]  # too few survivors: best candidate back
    bare = SegmentView(hidden=torch.zeros(5, 4), grid=(1, 5), last_hidden=torch.zeros(4), text_attention=att)
    assert m.filter(bare, 5, last=False).kept.tolist() == [0, 1, 2, 3, 4]


def test_merge_runs_inside_the_tower(tiny):
    """The CLIP layer after the merge sees [CLS] + fewer tokens; the LM row of a merged window is the projector
    of the mean of its patches' layer-0 output (the features LLaVA selects in the tiny tower)."""
    loaded, prepared = tiny["llava"]
    model = loaded.model
    layers = loaded.family.encoder_layers(model)
    seen, lm_in = {}, {}
    def length(module, args, out):  # returns None: the output is left alone
        seen.setdefault("len", (out[0] if isinstance(out, tuple) else out).shape[1])

    def grab(module, args, kwargs):
        lm_in.setdefault("x", (args[0] if args else kwargs["hidden_states"]).clone())

    h1 = layers[1].register_forward_hook(length)
    h2 = loaded.family.lm_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    method = make("mustdrop", keep=6, layers=(1,), similarity=0.5)
    with Pruner(loaded.family, model, method, prepared.layouts, prepared.prompt_len) as p:
        greedy(model, loaded.family, prepared.inputs, 1, set())
    h1.remove(), h2.remove()
    groups = p.tower.groups[0]
    assert groups.shape[0] >= 1 and seen["len"] == 1 + 36 - 8 * groups.shape[0]
    with torch.no_grad():
        feats = model.model.vision_tower(prepared.inputs["pixel_values"], output_hidden_states=True).hidden_states[-2][0, 1:]
        start = prepared.layouts[0].start
        for g in groups:
            ref = model.model.multi_modal_projector(feats[g].mean(0))
            assert torch.allclose(lm_in["x"][0, start + int(g.min())], ref, atol=1e-5)
    cut = p.plan.cuts[0]
    assert cut["layer"] == 0 and cut["image_tokens"] == 36 - 8 * groups.shape[0]


def test_qwen2_vl_is_refused_accurately(engine, tiny):
    loaded, prepared = tiny["qwen2_vl"]
    with pytest.raises(NotApplicable, match=r"no \[CLS\] token .*, and Qwen2-VL's PatchMerger fuses"):
        engine.run(loaded, prepared, make("mustdrop", keep=2, layers=(1,)), max_new_tokens=1)


@pytest.mark.parametrize("kv_layers", ["all", "code"])
@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_decode_after_kv_cut_equals_manual_forward(tiny, family, kv_layers):
    """Teacher-forced check: the prompt plus the first generated token, run layer by layer on the rows each
    layer keeps, the new token seeing only what that layer's cut cache holds, gives the engine's prefill and
    first decode-step logits."""
    loaded, prepared = tiny[family]
    model, lm = loaded.model, loaded.family.language_model(loaded.model)
    captured = {}
    def grab(module, args, kwargs):  # registered before the runtime's hooks: the full LM input
        captured.setdefault("x", (args[0] if args else kwargs["hidden_states"]).clone())

    hook = lm.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    method = make("mustdrop", keep=5, layers=(1, 2), similarity=0.5, kv_layers=kv_layers,
                  global_thr=0.05, individual_thr=0.05)
    with Pruner(loaded.family, model, method, prepared.layouts, prepared.prompt_len) as p:
        decoded = greedy(model, loaded.family, prepared.inputs, 2, set(), keep_logits=True)
    hook.remove()
    n_layers, full = len(lm.layers), prepared.prompt_len
    cut_from = 0 if kv_layers == "all" else 1
    assert [len(o) for o in p.cache_orders] == [len(p.order_at(i)) if i < cut_from else len(p.plan.order)
                                                for i in range(n_layers)]
    token = int(decoded.prefill_logits.argmax())
    with torch.no_grad():
        h, cur = captured["x"], torch.arange(full)
        new = model.model.get_input_embeddings()(torch.tensor([[token]]))
        for i, layer in enumerate(lm.layers):
            order = p.order_at(i)
            h, cur = h[:, torch.searchsorted(cur, order)], order
            seq, pos = torch.cat([h, new], 1), torch.cat([order, torch.tensor([full])])[None]
            allowed = pos[0][None, :] <= pos[0][:, None]
            allowed[-1, :len(order)] = torch.isin(order, p.cache_orders[i])  # the decode token reads the cache
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)[None, None]
            out = layer(seq, attention_mask=mask, position_ids=pos, position_embeddings=lm.rotary_emb(seq, pos))
            out = out[0] if isinstance(out, tuple) else out
            h, new = out[:, :len(order)], out[:, len(order):]
        logits = model.lm_head(lm.norm(torch.cat([h, new], 1)))[0]
    assert torch.allclose(logits[-2], decoded.prefill_logits, atol=1e-4)
    assert torch.allclose(logits[-1], decoded.step_logits[0], atol=1e-4)
