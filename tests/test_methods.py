"""Contract over every registered method, plus each method's defining property (pure torch views)."""
from __future__ import annotations

import pytest
import torch

from explorer.methods import REGISTRY, MethodError, SegmentView, make
from explorer.methods.alpha import blend
from explorer.methods.scoring import band_windows, cosine_to, top_k_sorted, window_grid
from explorer.methods.fastv_window import quotas
from explorer.testing import METHOD_VARIANTS, method_variants

GRID = (6, 8)
N = GRID[0] * GRID[1]


def view(seed=0, grid=GRID, text=5) -> SegmentView:
    """A view with every field a method may read (the staged runtime's probes included), random but real."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    attention = torch.rand(n, generator=g)
    return SegmentView(hidden=torch.randn(n, 16, generator=g), grid=grid, last_hidden=torch.randn(16, generator=g),
                       attention={"last": attention, "last_visual": torch.rand(n, generator=g),
                                  "all": torch.rand(n, generator=g)},
                       index=torch.arange(n), normed=torch.randn(n, 16, generator=g),
                       key_norms=torch.rand(n, generator=g), text_hidden=torch.randn(text, 16, generator=g),
                       text_key_norms=torch.rand(text, generator=g),
                       text_attention=torch.rand(text, n, generator=g).softmax(-1),
                       cls_attention=torch.rand(n, generator=g).softmax(-1), vision_keys=torch.randn(n, 8, generator=g),
                       text_embeds=torch.randn(text, 16, generator=g), cls_feature=torch.randn(16, generator=g))


VARIANTS = method_variants()
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in knobs.items()) or 'defaults'}" for name, knobs in VARIANTS]


def test_every_method_has_a_row_in_the_variant_table():
    assert list(METHOD_VARIANTS) == list(REGISTRY) and all(rows and rows[0] == {} for rows in METHOD_VARIANTS.values())


@pytest.mark.parametrize("name, knobs", VARIANTS, ids=IDS)
@pytest.mark.parametrize("k", [1, 7, 12, N])
def test_contract_exact_sorted_unique_deterministic(name, knobs, k):
    method = make(name, keep=k, **knobs)
    budget = method.budget(N)
    sel = method.select(view(), budget)
    exact = method.yields(GRID, budget) if hasattr(method, "yields") else k  # downsample: its grid, <= k
    assert sel.size == (N if name == "vanilla" else exact) and exact <= k
    kept = sel.kept.tolist()
    assert kept == sorted(set(kept)) and all(0 <= i < N for i in kept)
    if sel.merge is not None:
        assert torch.allclose(sel.merge.sum(1), torch.ones(sel.merge.shape[0]))
    grouped = [i for group in sel.groups() for i in group]  # groups are disjoint and hold no kept token
    assert len(grouped) == len(set(grouped)) and not set(grouped) & set(kept)
    again = method.select(view(), budget)
    assert torch.equal(sel.kept, again.kept)


@pytest.mark.parametrize("name", [n for n in REGISTRY if n != "vanilla"])
def test_invalid_budgets_raise(name):
    has_k = "layer" in {f.name for f in REGISTRY[name].knobs()}  # K is no knob of a method that cuts elsewhere
    for bad in ({"keep": 0}, {"keep": -3}, {"ratio": 0.0}, {"ratio": 1.5}, {"keep": 4, "ratio": 0.5},
                *([{"layer": -1}] if has_k else [])):
        with pytest.raises(MethodError):
            REGISTRY[name](**bad)
    with pytest.raises(MethodError):
        make(name, keep=N + 1).budget(N)
    assert make(name, ratio=0.25).budget(N) == N // 4


def test_random_seeded():
    a = make("random", keep=10, seed=1).select(view(), 10).kept
    b = make("random", keep=10, seed=1).select(view(), 10).kept
    c = make("random", keep=10, seed=2).select(view(), 10).kept
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reverse_is_bottom_k_of_fastv_scores():
    v = view(3)
    assert torch.equal(make("fastv_reverse", keep=9).select(v, 9).kept,
                       torch.sort(torch.argsort(v.attention["last"])[:9]).values)
    assert torch.equal(make("fastv", keep=9).select(v, 9).kept,
                       torch.sort(torch.argsort(v.attention["last"], descending=True)[:9]).values)


def test_fastv_all_queries_variant_uses_mean_rows():
    v = view(4)
    assert torch.equal(make("fastv", keep=5, query="all").select(v, 5).kept, top_k_sorted(v.attention["all"], 5))
    with pytest.raises(MethodError):
        make("fastv", keep=5, query="first")


def test_fastv_vis_uses_last_visual_token_row():
    v = view(5)
    assert make("fastv_vis", keep=6).needs() == ("last_visual",)
    assert torch.equal(make("fastv_vis", keep=6).select(v, 6).kept, top_k_sorted(v.attention["last_visual"], 6))


def test_window_quotas_even_across_windows():
    v = view(6, grid=(8, 8))
    method = make("fastv_window", keep=32, windows=4)
    kept = method.select(v, 32).kept
    windows = window_grid((8, 8), (4, 4))
    counts = [int(torch.isin(w, kept).sum()) for w in windows]
    assert counts == [2] * 16
    uneven = [int(torch.isin(w, method.select(v, 20).kept).sum()) for w in windows]
    assert sorted(uneven) == [1] * 12 + [2] * 4
    assert quotas(10, [2, 2, 9], [0.0, 0.0, 1.0]) == [2, 2, 6]


def test_pooling_keeps_max_l1_norm_one_per_window():
    v = view(7, grid=(6, 6))
    for k in (9, 4, 7):
        kept = make("pooling", keep=k).select(v, k).kept
        windows = band_windows((6, 6), k)
        assert len(windows) == k
        norms = v.hidden.abs().sum(-1)
        assert sorted(int(w[torch.argmax(norms[w])]) for w in windows) == kept.tolist()


def test_pooling_windows_match_paper_for_576_tokens():
    assert {w.numel() for w in band_windows((24, 24), 144)} == {4}
    assert {w.numel() for w in band_windows((24, 24), 64)} == {9}


def test_avgpool_groups_partition_the_grid():
    sel = make("avgpool", keep=4).select(view(8, grid=(4, 4)), 4)
    assert sel.kept.numel() == 0
    assert sorted(i for g in sel.groups() for i in g) == list(range(16))
    assert sel.groups()[0] == [0, 1, 4, 5]


def test_alpha_one_is_fastv_and_zero_is_uniqueness():
    v = view(9)
    fastv = make("fastv", keep=11).select(v, 11).kept
    assert torch.equal(make("alpha", keep=11, alpha=1.0).select(v, 11).kept, fastv)
    uniqueness = 1 - cosine_to(v.hidden, v.last_hidden)
    assert torch.equal(make("alpha", keep=11, alpha=0.0).select(v, 11).kept, top_k_sorted(uniqueness, 11))
    sel = make("alpha", keep=11, alpha=0.4).select(v, 11)
    rebl = blend(sel.parts["importance"], sel.parts["uniqueness"], 0.4)
    assert torch.equal(top_k_sorted(rebl, 11), sel.kept)
    with pytest.raises(MethodError):
        make("alpha", keep=3, alpha=1.2)


@pytest.mark.parametrize("name, knobs", VARIANTS, ids=IDS)
def test_every_method_runs_in_the_engine(engine, loaded, image, name, knobs):
    lm = loaded["llava"]
    prep = engine.prepare(lm, [image], "what is the colour ?")
    n = prep.layouts[0].count
    for k in (1, n):
        result = engine.run(lm, prep, make(name, keep=k, **{**knobs, "convention": "final"}), max_new_tokens=2)
        entry = result["images"][0]
        assert len(entry["kept"]) + len(entry.get("groups", [])) == (n if name == "vanilla" else k)
        assert result["tokens"]["kept_at_layer"] == (n if name == "vanilla" else k)
