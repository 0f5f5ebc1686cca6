"""SparseVLM on LLaVA-NeXT as its authors' code (modelling_sparse_llama.py, `image_shape` = the whole image's
features): one top-k over the whole image span at each cut, and the recycled tokens of the whole span clustered
together, so a cluster may hold base and high-res tokens. ranking="per_grid" ranks and clusters each grid alone."""
import pytest
import torch

from explorer.methods import SegmentView, make
from explorer.methods.scoring import top_k_sorted
from explorer.models.layout import ImageLayout, Segment
from explorer.results import image_entries, ranking_entry
from explorer.runtime.plan import Survivors, select_stage, unit_selections
from explorer.runtime.shared import run_methods
from explorer.runtime.spans import segment_budgets
from explorer.testing import picture

# A NeXT-shaped image: base 2x2 (4 tokens) + high-res 2x3 whose last column is the newline (6 tokens).
LAYOUT = ImageLayout(0, 5, (Segment(0, (2, 2), "base"), Segment(4, (2, 3), "highres")))
SCORES = [torch.tensor([0.9, 0.8, 0.85, 0.1]), torch.tensor([0.7, 0.6, 0.05, 0.95, 0.5, 0.3])]
PROMPT = "what is the colour of the shape ?"


def _views():
    """Per grid: the raters' attention rows (2 raters, each = the grid's scores) and one hidden state for every
    token, so that clustering has nothing to separate the grids by."""
    return [SegmentView(hidden=torch.ones(len(s), 4), grid=seg.grid, last_hidden=torch.zeros(4),
                        text_attention=torch.stack([s, s]), index=torch.arange(len(s)))
            for s, seg in zip(SCORES, LAYOUT.segments)]


def test_joint_ranking_is_one_top_k_over_the_concatenated_scores():
    scores = torch.cat(SCORES)
    plain = make("sparsevlm", keep=4, layers=(0,), convention="final", recycle=0.0)
    ((unit, _, sel),) = unit_selections(plain, 0, LAYOUT, _views())
    assert unit == (0, 1) and sel.merge is None
    assert sel.kept.tolist() == top_k_sorted(scores, 4).tolist() == [0, 1, 2, 7]
    assert torch.equal(sel.scores, scores)
    # with recycling: 1 cluster (the authors' formula, capped at their share); the top 3 kept, the top 30 % + 1
    # of the 7 dropped (image indices 1, 4, 5) clustered into one token across the two grids
    method = make("sparsevlm", keep=4, layers=(0,), convention="final")
    ((unit, _, sel),) = unit_selections(method, 0, LAYOUT, _views())
    assert sel.kept.tolist() == top_k_sorted(scores, 3).tolist() == [0, 2, 7]
    assert sel.groups() == [[1, 4, 5]]
    with pytest.raises(ValueError, match="spans two grids"):  # a per-segment split cannot hold it
        select_stage(method, 0, LAYOUT, _views())
    survivors = Survivors([LAYOUT])
    assert survivors.apply(LAYOUT, unit, sel, torch.arange(LAYOUT.count)) == [(0, None), (2, None), (7, None),
                                                                               (1, 0)]
    survivors.record(1)
    assert survivors.cuts[0]["survivors"] == [[0, 1, 2, 7]] and survivors.cuts[0]["groups"] == [[[1, 4, 5]]]
    assert survivors.reps(LAYOUT, 0).tolist() == [0, 1, 2] and survivors.reps(LAYOUT, 1).tolist() == [3]
    (entry,) = image_entries([LAYOUT], survivors.selections())  # one selection over the whole image
    assert (entry["kept"], entry["groups"]) == ([0, 2, 7], [[1, 4, 5]])
    assert entry["scores"] == pytest.approx(scores.tolist())
    assert ranking_entry(method, [LAYOUT])["ranking"] == ("authors: one ranking over the image span (base + "
                                                          "high-res grids, newline tokens included) (as the authors)")


def test_per_grid_option_ranks_and_clusters_each_grid():
    method = make("sparsevlm", keep=4, layers=(0,), convention="final", ranking="per_grid")
    chosen = unit_selections(method, 0, LAYOUT, _views())
    assert [unit for unit, _, _ in chosen] == [(0,), (1,)]
    for (_, _, sel), scores in zip(chosen, SCORES):  # budget 2 + 2: each grid its top 1 and one cluster
        assert sel.kept.tolist() == top_k_sorted(scores, 1).tolist() and sel.merge.shape[0] == 1
    assert ranking_entry(method, [LAYOUT])["ranking"].startswith("per_grid: each grid on its own")


@pytest.fixture(scope="module")
def next_run(engine, loaded):
    lm = loaded["llava_next"]
    return engine, lm, engine.prepare(lm, [picture(0)], PROMPT)


def _singles(entry):
    """The first cut's survivors that stand for themselves (image index; a one-token cluster among them) and its
    groups."""
    first = entry["survivors"][0]
    groups = first.get("groups", [])
    return [t for t in first["kept"] if t not in {g[0] for g in groups}], groups


def _holds_top(scores: torch.Tensor, chosen: list[int], m: int) -> bool:
    """`chosen` holds the m highest of `scores` (ties allowed: the results round scores to 6 decimals)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[chosen] = True
    return mask.all() or float(scores[mask].topk(m).values[-1]) >= float(scores[~mask].max()) - 1e-6


def test_engine_ranks_the_whole_span_and_clusters_across_grids(next_run):
    """Tiny NeXT (4 layers: one cut, after layer 2), "final" 8: the tokens chosen by score are one top-k over the
    span's scores, and a cluster holds tokens of both grids; per_grid: each grid's own top-k with its share of
    the budget, every cluster inside one grid."""
    engine, lm, prep = next_run
    img = prep.layouts[0]
    high, k = img.segments[1].offset, 8
    method = make("sparsevlm", keep=k, convention="final")
    joint = engine.run(lm, prep, method, max_new_tokens=1)
    assert joint["ranking"].endswith("(as the authors)") and joint["ranking"].startswith("authors: one ranking")
    entry = joint["images"][0]
    singles, groups = _singles(entry)
    assert len(singles) + len(groups) == k == len(entry["kept"]) + len(entry["groups"])
    assert _holds_top(torch.tensor(entry["scores"]), singles, k - method.recycled(0, img.count, k))
    assert any(min(g) < high <= max(g) for g in groups)  # a cluster across the grids
    split = engine.run(lm, prep, make("sparsevlm", keep=k, convention="final", ranking="per_grid"),
                       max_new_tokens=1)
    entry = split["images"][0]
    singles, groups = _singles(entry)
    assert len(singles) + len(groups) == k and all(max(g) < high or min(g) >= high for g in groups)
    scores = torch.tensor(entry["scores"])
    for seg, share in zip(img.segments, segment_budgets(k, img)):
        mine = [t - seg.offset for t in singles if seg.offset <= t < seg.offset + seg.count]
        by_score = share - method.recycled(0, seg.count, share)
        assert _holds_top(scores[seg.offset: seg.offset + seg.count], mine, by_score)


def test_a_cluster_across_grids_enters_as_its_members_mean(next_run):
    """The merged row at the cluster's first member's position is the mean of its members' hidden states, base
    and high-res rows alike."""
    from explorer.runtime.pruner import Pruner
    engine, lm, prep = next_run
    layers = lm.family.lm_layers(lm.model)
    method = make("sparsevlm", keep=8, convention="final").for_depth(len(layers))
    (cut,) = [s.layer for s in method.stages(len(layers))]
    seen = {}

    def grab(name):
        return lambda m, a, kw: [seen.setdefault(name, (a[0] if a else kw["hidden_states"])[0].clone()), None][1]

    before = layers[cut].register_forward_pre_hook(grab("before"), with_kwargs=True)
    try:
        with Pruner(lm.family, lm.model, method, prep.layouts, prep.prompt_len) as pruner, torch.no_grad():
            after = layers[cut].register_forward_pre_hook(grab("after"), with_kwargs=True)  # runs after the cut
            lm.model(**prep.inputs)
            after.remove()
    finally:
        before.remove()
    img = prep.layouts[0]
    high = img.segments[1].offset
    (groups,) = pruner.plan.cuts[0]["groups"]
    across = [g for g in groups if min(g) < high <= max(g)]
    assert across
    order = pruner.plan.order.tolist()  # sequence position of each row after the cut
    for g in across:
        row = order.index(img.start + g[0])
        expected = seen["before"][[img.start + t for t in g]].mean(0)
        assert torch.allclose(seen["after"][row], expected, atol=1e-5)


def test_shared_equals_solo_with_clusters_across_grids(next_run):
    """Joint and per-grid SparseVLM forked from the shared trunk == each run alone (tokens, logits, survivors)."""
    engine, lm, prep = next_run
    depth = len(lm.family.lm_layers(lm.model))
    methods = [make("sparsevlm", keep=8, convention="final", ranking=r).for_depth(depth)
               for r in ("authors", "per_grid")] + [make("fastv", keep=8)]
    args = (lm.family, lm.model, prep.inputs, prep.layouts, methods, 4, set())
    shared = run_methods(*args, keep_logits=True)
    solo = run_methods(*args, solo=True, keep_logits=True)
    for method in methods:
        a, b = shared[method], solo[method]
        assert a.error is None and b.error is None
        x, y = a.decoded[0], b.decoded[0]
        assert x.tokens == y.tokens and x.kv_lengths == y.kv_lengths, method.name
        assert torch.allclose(x.prefill_logits, y.prefill_logits, atol=1e-5), method.name
        for p, q in zip(x.step_logits, y.step_logits):
            assert torch.allclose(p, q, atol=1e-5), method.name
        assert a.plans[0].cuts == b.plans[0].cuts, method.name
    (groups,) = shared[methods[0]].plans[0].cuts[0]["groups"]
    high = prep.layouts[0].segments[1].offset
    assert any(min(g) < high <= max(g) for g in groups)
