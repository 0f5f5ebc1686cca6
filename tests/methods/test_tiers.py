"""The method tiers and their knobs: a scored method is one `score`; knobs are checked once, from their field's
declaration, in one line; running a method never changes it (methods are cache keys); K is no knob of a method
that cuts elsewhere."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from explorer.limits import InputError
from explorer.methods import REGISTRY, MethodError, ScoredMethod, SegmentView, make
from explorer.methods.scoring import top_k_sorted
from explorer.settings import SETTINGS, build_methods
from explorer.testing import run_plan


@dataclass(frozen=True)
class Loudest(ScoredMethod, name="loudest", label="Loudest (largest hidden-state norm)"):
    """A toy for this test: keeps the tokens whose hidden state entering layer K has the largest L2 norm."""

    def score(self, view: SegmentView) -> torch.Tensor:
        return view.hidden.float().norm(dim=-1)  # (n,)


def grid_view(n: int = 12, seed: int = 0) -> SegmentView:
    g = torch.Generator().manual_seed(seed)
    return SegmentView(hidden=torch.randn(n, 8, generator=g), grid=(3, n // 3), last_hidden=torch.randn(8, generator=g))


def test_a_scored_method_is_its_score(monkeypatch, engine, loaded, image):
    """One class with one `score` (and the registry line) is a whole method: top-k, heat map, re-selection, the
    registry's knobs and a run through the engine."""
    monkeypatch.setitem(REGISTRY, "loudest", Loudest)
    view = grid_view()
    norms = view.hidden.norm(dim=-1)
    sel = make("loudest", keep=5).select(view, 5)
    assert torch.equal(sel.kept, top_k_sorted(norms, 5)) and torch.equal(sel.scores, norms)
    assert torch.equal(make("loudest", keep=3).from_scores(sel.scores, {}, 3).kept, top_k_sorted(norms, 3))
    assert Loudest.note.startswith("A toy for this test") and make("loudest").config()["method"] == "loudest"
    lm = loaded["llava"]
    prep = engine.prepare(lm, [image], "what is the colour ?")
    result = engine.run(lm, prep, make("loudest", keep=4), max_new_tokens=2)
    assert len(result["images"][0]["kept"]) == 4 and result["label"] == Loudest.label


@pytest.mark.parametrize("name, knobs, message", [
    ("fastv_window", {"windows": 0}, "fastv_window.windows must be between 1 and 64, got 0"),
    ("fastv_window", {"windows": 2.5}, "fastv_window.windows must be a whole number, got 2.5"),
    ("alpha", {"alpha": 1.5}, "alpha.alpha must be between 0 and 1, got 1.5"),
    ("fastv", {"query": "first"}, "fastv.query must be one of last, all, got 'first'"),
    ("sparsevlm", {"layers": (6, 2)}, "sparsevlm.layers must be strictly increasing and not empty, got (6, 2)"),
    ("sparsevlm", {"layers": [2, 6]}, "sparsevlm.layers must be a tuple of whole numbers, got [2, 6]"),
    ("mustdrop", {"layers": (-1, 2)}, "mustdrop.layers must be >= 0, got (-1, 2)"),
    ("mustdrop", {"similarity": 1.2}, "mustdrop.similarity must be between -1 and 1, got 1.2"),
    ("cdpruner", {"quality": "cubic"}, "cdpruner.quality must be one of theta, linear, got 'cubic'"),
    ("fastv", {"layer": -1}, "fastv.layer must be >= 0, got -1"),
])
def test_a_knob_out_of_its_declared_range_is_refused_in_one_line(name, knobs, message):
    with pytest.raises(MethodError) as error:
        make(name, keep=4, **knobs)
    assert str(error.value) == message


def test_the_entry_points_refuse_with_the_methods_own_rule():
    """build_methods (CLI, page, API, sweeps) coerces JSON values, then the field's declaration decides."""
    with pytest.raises(InputError, match=r"^fastv_window\.windows must be between 1 and 64, got 99\.$"):
        build_methods(["fastv_window"], SETTINGS, {"fastv_window": {"windows": 99}})
    assert build_methods(["sparsevlm"], SETTINGS, {"sparsevlm": {"layers": [1, 3]}})[0].layers == (1, 3)


def test_k_is_no_knob_of_a_method_that_cuts_elsewhere():
    """SparseVLM and MustDrop cut after their own `layers`, pre-LLM methods at the LM's input: the page's K
    reaches only the methods that cut at K, and passing it to the others is refused, never silently replaced."""
    with pytest.raises(MethodError, match="sparsevlm has no knob 'layer'"):
        make("sparsevlm", keep=4, layer=5)
    with pytest.raises(MethodError, match="divprune has no knob 'layer'"):
        make("divprune", keep=4, layer=5)
    fastv, sparse, pre = build_methods(["fastv", "sparsevlm", "divprune"], dataclasses.replace(SETTINGS, layer=1))
    assert fastv.layer == 1 and sparse.layers == (2, 6, 15) and [s.layer for s in sparse.stages(32)] == [3, 7, 16]
    assert "layer" not in sparse.config() and "layer" not in pre.config() and fastv.config()["layer"] == 1


@pytest.mark.parametrize("name, knobs", [("sparsevlm", {}), ("sparsevlm", {"convention": "final"}),
                                         ("mustdrop", {"similarity": 0.5}), ("dart", {})])
def test_running_a_method_leaves_it_unchanged(engine, loaded, name, knobs):
    """Methods key caches: a run (stages, budgets, selections) must not change them. On a 4-layer model the
    engine runs a copy with the layers it has (`for_depth`) and reports that copy; the user's object stays."""
    lm = loaded["llava"]
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    prep = engine.prepare(lm, [image], "what is the colour of the square ?")
    method = make(name, keep=4, **knobs)
    before, key = copy.deepcopy(vars(method)), hash(method)
    result = engine.run(lm, prep, method, max_new_tokens=2)
    run_plan(lm, prep, method, steps=1)
    for stage in range(len(method.stages(32))):
        method.stage_budget(stage, 24, 4)
    assert vars(method) == before and hash(method) == key and method == make(name, keep=4, **knobs)
    if hasattr(method, "layers"):  # the authors' layers: only the first leaves a layer after it in 4
        assert method.for_depth(4).layers == tuple(result["config"]["layers"]) == (2,) != method.layers
    else:
        assert method.for_depth(4) is method and result["config"] == method.config()


def test_a_layered_method_schedules_its_own_cuts():
    """The schedule is a function of the method's own layers, so a copy for a shallower model (fewer layers) ends
    at the budget after its last cut, and the user's method keeps its three cuts."""
    final = make("sparsevlm", keep=64, convention="final")
    assert [final.stage_budget(s, 576, 64) for s in range(3)] == [277, 133, 64]
    shallow = final.for_depth(8)  # layers 2 and 6 fit (L + 1 < 8), 15 does not
    assert shallow.layers == (2, 6) and [shallow.stage_budget(s, 576, 64) for s in range(2)] == [192, 64]
    assert final.layers == (2, 6, 15) and final.for_depth(32) is final
    with pytest.raises(MethodError, match=r"layers \(2, 6, 15\) go past this 4-layer model"):
        final.check_layers(4)
