"""Small cases checked by hand, and each method's scores against an independent computation."""
import pytest
import torch

from explorer.methods import SegmentView, make
from explorer.methods.dart import split_quota
from explorer.methods.divprune import max_min_diverse

from explorer.testing import run_plan


def test_divprune_picks_the_farthest_points():
    # Unit vectors at 0, 10, 20, 90, 180 and 185 degrees: the most isolated is 90 (nearest 70 deg away), then
    # the farthest from it (185, 95 deg away), then the farthest from both (0: 90 deg to its nearest kept).
    angles = torch.tensor([0.0, 10.0, 20.0, 90.0, 180.0, 185.0]) * torch.pi / 180
    x = torch.stack([angles.cos(), angles.sin()], dim=1)
    order, _ = max_min_diverse(x, 3)
    assert order.tolist() == [3, 5, 0]
    sel = make("divprune", keep=3).select(SegmentView(hidden=x, grid=(2, 3), last_hidden=x[0]), 3)
    assert sel.kept.tolist() == [0, 3, 5]


def test_dart_hand_case():
    # 6 image tokens in 2-D; key norms make token 0 the image pivot, the text pivot points along +y.
    normed = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.1, 0.9], [0.7, -0.7]])
    view = SegmentView(hidden=normed, grid=(2, 3), last_hidden=normed[0], normed=normed,
                       key_norms=torch.tensor([5.0, 1, 1, 1, 1, 1]), text_hidden=torch.tensor([[0.0, 1.0]]),
                       text_key_norms=torch.tensor([3.0]))
    sel = make("dart", keep=3, pivot_image=1, pivot_text=1).select(view, 3)
    # pivot 0 (+x) keeps its least similar token, 3 (-x); the text pivot (+y) then keeps 5 (most -y).
    assert sel.kept.tolist() == [0, 3, 5]
    assert split_quota(7, 3) == [3, 2, 2]


def test_dart_runtime_equals_single_cut_pruner(tiny):
    """The staged runtime's single cut gives the same logits as the engine's Pruner replaying its choice."""
    for family in ("llava", "qwen2_vl"):
        loaded, prepared = tiny[family]
        k = 3 if family == "llava" else 2
        plan, staged = run_plan(loaded, prepared, make("dart", keep=k, layer=2))
        _, replay = run_plan(loaded, prepared, make("fastv", keep=k, layer=2), fixed=plan.selections)
        assert torch.allclose(staged.prefill_logits, replay.prefill_logits, atol=1e-6)
        for a, b in zip(staged.step_logits, replay.step_logits):
            assert torch.allclose(a, b, atol=1e-6)


def test_dart_keys_match_a_manual_forward(tiny):
    """Key L1 norms come from layer K-1's keys with RoPE (checked against the attention's own projections)."""
    loaded, prepared = tiny["llava"]
    model, layers = loaded.model, loaded.family.lm_layers(loaded.model)
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("h", kwargs["hidden_states"].clone())
        seen.setdefault("pe", kwargs["position_embeddings"])

    handle = layers[1].self_attn.register_forward_pre_hook(grab, with_kwargs=True)
    from explorer.runtime.pruner import Pruner
    with Pruner(loaded.family, model, make("dart", keep=4, layer=2), prepared.layouts,
                      prepared.prompt_len) as pruner:
        model(**prepared.inputs)
    handle.remove()
    attn = layers[1].self_attn
    k = attn.k_proj(seen["h"]).view(1, prepared.prompt_len, -1, attn.head_dim).transpose(1, 2)
    _, k = loaded.family.apply_rotary(k, k, *seen["pe"])
    assert torch.allclose(pruner.probes.rows[2]["keys"], k.abs().sum(dim=(1, 3))[0], atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_fastervlm_keeps_top_cls_attention_of_eager_clip(tiny, family, tmp_path):
    """[CLS] attention from the pre-hook equals the eager CLIP attention weights; the top-k are kept."""
    loaded, prepared = tiny[family]
    plan, _ = run_plan(loaded, prepared, make("fastervlm", keep=5), steps=1)
    tower = loaded.model.model.vision_tower
    pixel = prepared.inputs["pixel_values"]
    pixel = pixel[0, :len(pixel[0])] if pixel.dim() == 5 else pixel
    if family == "llava_next":
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches
        cfg = loaded.model.config
        tiles = image_size_to_num_patches(prepared.inputs["image_sizes"][0].tolist(), cfg.image_grid_pinpoints,
                                          cfg.vision_config.image_size)
        pixel = prepared.inputs["pixel_values"][0, :tiles]
    impl = tower.config._attn_implementation
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = tower(pixel, output_attentions=True)
    finally:
        tower.config._attn_implementation = impl
    layer = loaded.model.config.vision_feature_layer % (len(out.attentions) + 1) - 1
    eager = out.attentions[layer].mean(1)[:, 0, 1:]  # (tiles, P)
    index = loaded.family.vision_index(loaded.model, prepared.inputs, prepared.layouts)[0]
    sel = plan.selections[0]
    for seg_sel, vidx in zip(sel, index):
        valid = vidx >= 0
        expected = torch.zeros(len(vidx))
        expected[valid] = eager.flatten()[vidx[valid]]
        assert torch.allclose(seg_sel.scores[valid], expected[valid], atol=1e-6)
        kept = set(seg_sel.kept.tolist())
        if family == "llava_next":  # the authors' NeXT rule: top patches per vision tile, no newline token
            assert not set(torch.nonzero(~valid).flatten().tolist()) & kept
        per_tile = len(vidx) if family == "llava" else eager.shape[1]
        tile = torch.where(valid, vidx // per_tile, -1)  # (n,) each token's tile, -1 for a newline
        for t in torch.unique(tile[valid]).tolist():
            members = torch.nonzero(tile == t).flatten()
            mine = sorted(i for i in members.tolist() if i in kept)
            top = members[torch.argsort(expected[members], descending=True, stable=True)[:len(mine)]]
            assert sorted(top.tolist()) == mine


def test_visionzip_merges_in_vision_space(tiny):
    """Contextual tokens = projector(target + mean of joiners); groups + dominant cover every patch once."""
    loaded, prepared = tiny["llava"]
    model = loaded.model
    feats, lm_in = {}, {}
    h1 = model.model.multi_modal_projector.register_forward_pre_hook(
        lambda m, a: [feats.setdefault("x", a[0].clone()), None][1])
    plan, _ = run_plan(loaded, prepared, make("visionzip", keep=8, contextual=0.25, convention="final"), steps=1)
    h1.remove()

    def grab(module, args, kwargs):
        lm_in.setdefault("x", (args[0] if args else kwargs["hidden_states"]).clone())

    h2 = loaded.family.lm_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    run_plan(loaded, prepared, make("visionzip", keep=8, contextual=0.25, convention="final"), steps=1)
    h2.remove()
    sel = plan.selections[0][0]
    groups = sel.groups()
    assert sel.kept.numel() == 6 and len(groups) == 2
    flat = sorted(sel.kept.tolist() + [t for g in groups for t in g])
    assert flat == list(range(prepared.layouts[0].count))  # a partition of all patches
    start = prepared.layouts[0].start
    x = feats["x"][0]  # (P, Dv) un-merged vision features (this hook ran before the merge)
    for row, group in zip(sel.merge, groups):
        target = int(torch.nonzero(row == row.max()).min()) if len(group) > 1 else group[0]
        joiners = [t for t in group if t != target]
        merged = x[target] + (x[joiners].mean(0) if joiners else 0)
        with torch.no_grad():
            expected = model.model.multi_modal_projector(merged[None, None])[0, 0]
        assert torch.allclose(lm_in["x"][0, start + group[0]], expected, atol=1e-5)


def test_sparsevlm_raters_and_recycling():
    from explorer.methods.sparsevlm import SparseVLM, density_peak_clusters
    # Raters: text token 0 aligns with every image token, token 1 with none -> only token 0 rates.
    image = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    assert SparseVLM.choose_raters(image, text).tolist() == [True, False, False]
    # Two far blobs of 4 points each -> two clusters, one per blob.
    blobs = torch.cat([torch.randn(4, 3, generator=torch.Generator().manual_seed(0)) * 0.01,
                       torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * 0.01 + 5])
    owner = density_peak_clusters(blobs, 2)
    assert len(set(owner[:4].tolist())) == 1 and len(set(owner[4:].tolist())) == 1 and owner[0] != owner[4]
    # 20 tokens, budget 6: 14 dropped -> int(14*0.3)+1 = 5 recycled -> int(5/10)+1 = 1 cluster, so 5 kept
    # (top rater attention) + 1 merged token of the 5 best-scored dropped ones.
    scores = torch.arange(20.0)
    view = SegmentView(hidden=torch.randn(20, 4), grid=(4, 5), last_hidden=torch.zeros(4),
                       text_attention=scores[None])
    sel = SparseVLM(keep=6, layers=(0,)).select_stage(0, view, 6)
    assert sel.kept.tolist() == [15, 16, 17, 18, 19]
    assert sel.groups() == [[10, 11, 12, 13, 14]]
