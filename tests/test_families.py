"""Family-specific layouts checked against what the stock forward builds (beyond the shared invariant tests)."""
from __future__ import annotations

import torch
from explorer.testing import picture

from explorer.models.families import family_class


def lm_input(lm, prep) -> torch.Tensor:
    """(L, D) the sequence entering decoder layer 0 in a stock forward."""
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("x", (args[0] if args else kwargs["hidden_states"])[0].clone())

    handle = lm.family.lm_layers(lm.model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            lm.model(**prep.inputs)
    finally:
        handle.remove()
    return seen["x"]


def test_every_family_module_registers_itself():
    for kind in ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen3_vl"):
        assert family_class(kind).model_types[0] == kind


def test_llava_onevision_grids_are_the_stock_packing(engine, loaded):
    """Base grid (no newline) then the high-res grid shrunk by anyres_max (64x48 px: 2x2 tiles, 6x8 unpadded,
    interpolated to 3x4) with the newline token as its last column, for every image of a multi-image prompt."""
    lm = loaded["llava_onevision"]
    prep = engine.prepare(lm, [picture(0), picture(1, size=(40, 64))], "what is the colour of the shape ?")
    x = lm_input(lm, prep)
    newline = lm.model.model.image_newline
    for img in prep.layouts:
        base, high = img.segments
        assert base.grid == (4, 4) and base.name == "base" and high.name == "highres"
        rows = img.start + high.offset + torch.arange(high.count).view(high.grid)  # (h, w + 1) positions
        assert torch.equal(x[rows[:, -1]], newline.expand(high.grid[0], -1))  # the last column is the newline
        assert not torch.isclose(x[rows[:, :-1]], newline).all(-1).any()
        assert not torch.isclose(x[img.start: img.start + base.count], newline).all(-1).any()
    assert prep.layouts[0].segments[1].grid == (3, 5)


def test_qwen3_vl_deepstack_cut_below_and_above_the_last_injection_layer(engine, loaded, monkeypatch):
    """Tiny Qwen3-VL adds DeepStack features to the outputs of decoder layers 0 and 1. A cut at K=1 (below the
    last injection): the stock loop alone fails (full-length features, shorter sequence); with the family's
    hooks it runs and the features reach exactly the kept image tokens. A cut at K=3 (above): the hooks give
    logits identical to letting the stock loop add the features. (K=0 is in test_runtime: equal to the stock
    text model run on the shortened input with the kept tokens' features.)"""
    from explorer.methods import make
    from explorer.runtime.pruner import Pruner

    lm = loaded["qwen3_vl"]
    assert lm.family.deepstack_layers(lm.model) == 2
    prep = engine.prepare(lm, [picture(0)], "what is the colour of the shape ?")

    def run(layer, hooks=True):
        if not hooks:
            monkeypatch.setattr(lm.family, "cut_hooks", lambda model, order_at: [])
        try:
            method = make("random", keep=4, layer=layer, seed=5)
            with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len) as pruner, torch.no_grad():
                return lm.model(**prep.inputs).logits, pruner.plan.order
        finally:
            monkeypatch.undo()

    with torch.no_grad():
        stock = lm.model(**prep.inputs).logits
    above, _ = run(3)
    assert torch.equal(above, run(3, hooks=False)[0]) and not torch.equal(above, stock)
    import pytest
    with pytest.raises((RuntimeError, IndexError)):
        run(1, hooks=False)
    below, order = run(1)
    assert torch.isfinite(below).all() and len(order) == prep.prompt_len - prep.layouts[0].count + 4
