"""LLaVA-NeXT as the authors rank it: one ranking over the whole image span (base + high-res grids, newline tokens
candidates), the per-grid split as a labelled option, FastV_VIS querying the last patch, FasterVLM per vision
tile with no newline token, DART's pivots + 8-multiple over the whole span."""
import pytest
import torch
from PIL import Image

from explorer.methods import SegmentView, make
from explorer.methods.scoring import top_k_sorted
from explorer.models.layout import ImageLayout, Segment
from explorer.results import ranking_entry
from explorer.runtime.spans import segment_budgets, select_units, unit_budgets, units

# A NeXT-shaped image: base 2x2 (4 tokens) + high-res 2x3 whose last column is the newline (6 tokens).
LAYOUT = ImageLayout(0, 5, (Segment(0, (2, 2), "base"), Segment(4, (2, 3), "highres")))
SCORES = [torch.tensor([0.9, 0.8, 0.85, 0.1]), torch.tensor([0.7, 0.6, 0.05, 0.95, 0.5, 0.3])]


def _views():
    return [SegmentView(hidden=torch.randn(len(s), 4), grid=seg.grid, last_hidden=torch.zeros(4),
                        attention={"last": s}) for s, seg in zip(SCORES, LAYOUT.segments)]


def _kept(layout, sels):
    return sorted(int(i) + seg.offset for seg, sel in zip(layout.segments, sels) for i in sel.kept)


def test_joint_ranking_is_one_top_k_over_the_concatenated_scores():
    method = make("fastv", keep=4)
    unit_list = units(method, LAYOUT)
    assert unit_list == [(0, 1)]
    sels = select_units(method.select, _views(), unit_list, unit_budgets(4, LAYOUT, unit_list))
    assert _kept(LAYOUT, sels) == top_k_sorted(torch.cat(SCORES), 4).tolist() == [0, 1, 2, 7]
    assert torch.equal(torch.cat([s.scores for s in sels]), torch.cat(SCORES))
    # a newline token (image index 9) is a candidate like any other: reverse FastV takes it
    rev = make("fastv_reverse", keep=3)
    sels = select_units(rev.select, _views(), units(rev, LAYOUT), [3])
    assert _kept(LAYOUT, sels) == top_k_sorted(torch.cat(SCORES), 3, largest=False).tolist() == [3, 6, 9]


def test_per_grid_option_is_the_old_split():
    """ranking="per_grid": each grid its own top-k, the budget split by grid size (4 of 10 -> 2 + 2)."""
    method = make("fastv", keep=4, ranking="per_grid")
    unit_list = units(method, LAYOUT)
    assert unit_list == [(0,), (1,)] and unit_budgets(4, LAYOUT, unit_list) == segment_budgets(4, LAYOUT) == [2, 2]
    sels = select_units(method.select, _views(), unit_list, unit_budgets(4, LAYOUT, unit_list))
    old = [top_k_sorted(s, k) for s, k in zip(SCORES, segment_budgets(4, LAYOUT))]
    assert [s.kept.tolist() for s in sels] == [o.tolist() for o in old]
    assert _kept(LAYOUT, sels) == [0, 2, 4, 7]  # the joint ranking keeps [0, 1, 2, 7]
    assert units(make("pooling", keep=4), LAYOUT) == [(0,), (1,)]  # spatial methods stay per grid either way


def test_last_patch_skips_the_newline():
    assert LAYOUT.last_patch == 8  # image index 9 is the high-res grid's last newline token
    assert ImageLayout(0, 0, (Segment(0, (3, 3)),)).last_patch == 8


@pytest.fixture(scope="module")
def next_model(engine, loaded):
    loaded = loaded["llava_next"]
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    image.paste((10, 10, 220), (0, 0, 20, 15))
    return engine, loaded, engine.prepare(loaded, [image], "what is the colour of the square ?")


def _newlines(layout):
    return [seg.offset + i for seg in layout.segments for i, nl in enumerate(seg.is_newline()) if nl]


def _is_top_k(scores: torch.Tensor, kept: list[int], k: int) -> bool:
    """kept is a top-k of scores (ties allowed: the results round scores to 6 decimals)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[kept] = True
    return len(kept) == k and (mask.all() or float(scores[mask].min()) >= float(scores[~mask].max()) - 1e-6)


def test_engine_joint_and_per_grid_fastv(next_model):
    """Through the engine on tiny NeXT: "authors" = one top-k over the span's scores; "per_grid" = each grid's
    own top-k with the size split (what every method did before)."""
    engine, loaded, prepared = next_model
    img = prepared.layouts[0]
    k = 8
    joint = engine.run(loaded, prepared, make("fastv", keep=k), max_new_tokens=1)
    entry = joint["images"][0]
    assert _is_top_k(torch.tensor(entry["scores"]), entry["kept"], k)  # image order: base, then high-res grid
    assert joint["ranking"].startswith("authors: one ranking over the image span")
    split = engine.run(loaded, prepared, make("fastv", keep=k, ranking="per_grid"), max_new_tokens=1)
    entry = split["images"][0]
    scores = torch.tensor(entry["scores"])
    for seg, kk in zip(img.segments, segment_budgets(k, img)):
        mine = [i - seg.offset for i in entry["kept"] if seg.offset <= i < seg.offset + seg.count]
        assert _is_top_k(scores[seg.offset: seg.offset + seg.count], mine, kk)
    assert split["ranking"].startswith("per_grid: each grid on its own") and split["config"]["ranking"] == "per_grid"


def test_fastv_vis_queries_the_last_patch(next_model):
    from explorer.runtime.pruner import Pruner
    engine, loaded, prepared = next_model
    img = prepared.layouts[0]
    pruner = Pruner(loaded.family, loaded.model, make("fastv_vis", keep=6), prepared.layouts, prepared.prompt_len)
    (row,) = pruner.query_positions(prepared.prompt_len)
    assert row == img.start + img.last_patch and img.last_patch not in _newlines(img)
    assert img.start + img.count - 1 - img.start in _newlines(img)  # the span's last token is a newline
    assert int(prepared.inputs["input_ids"][0, row]) == loaded.family.image_token_id(loaded.model)


@pytest.mark.parametrize("convention", ["paper", "final"])
def test_fastervlm_per_tile_without_newlines(next_model, convention):
    """As the authors' llava_arch.py (merge type fixed to 'spatial': no unpad, no newline): each vision tile keeps
    its even share of patches, no newline token survives, exactly `keep` in both conventions."""
    engine, loaded, prepared = next_model
    img = prepared.layouts[0]
    newlines = _newlines(img)
    k = 8
    run = engine.run(loaded, prepared, make("fastervlm", keep=k, convention=convention), max_new_tokens=1)
    kept = run["images"][0]["kept"]
    assert run["ranking"].startswith("authors: per vision-tower tile") and "newline tokens dropped" in run["ranking"]
    assert len(kept) == k and not set(kept) & set(newlines)
    vision = loaded.model.config.vision_config
    per_tile = (vision.image_size // vision.patch_size) ** 2
    vidx = torch.cat(loaded.family.vision_index(loaded.model, prepared.inputs, prepared.layouts)[0])  # (n,) row
    tiles = torch.bincount(vidx[kept] // per_tile, minlength=int(vidx.max()) // per_tile + 1).tolist()
    assert len(tiles) >= 2 and max(tiles) - min(tiles) <= 1  # an even share per tile
    old = engine.run(loaded, prepared, make("fastervlm", keep=k, convention=convention, ranking="per_grid"),
                     max_new_tokens=1)["images"][0]["kept"]
    assert len(old) == k and not set(old) & set(newlines)  # per-grid option: newlines dropped too


def test_mustdrop_ranking_says_how_it_differs():
    """MustDrop's authors flatten the tiles into one span; its per-grid ranking is reported as a difference."""
    ranking = ranking_entry(make("mustdrop", keep=4), [LAYOUT])["ranking"]
    assert ranking.startswith("authors: each grid on its own") and "flattens the tiles" in ranking
    assert "as the authors" not in ranking


@pytest.mark.parametrize("ranking", ["authors", "per_grid"])
def test_dart_counts_on_next(next_model, ranking):
    """The authors' DART keeps pivots + 8 * floor(B / 8) over the whole span: 4 + 16 = 20 at 16 ("paper"), and
    exactly 16 in "final", in both rankings (it kept one pivot set per grid before: 4 more)."""
    engine, loaded, prepared = next_model
    runs = {conv: engine.run(loaded, prepared, make("dart", keep=16, convention=conv, ranking=ranking),
                             max_new_tokens=1) for conv in ("paper", "final")}
    assert {conv: r["tokens"]["kept_at_layer"] for conv, r in runs.items()} == {"paper": 4 + 8 * 2, "final": 16}
    assert all(r["ranking"].startswith(ranking) for r in runs.values())  # the staged runtime's results say it too


def test_cli_passes_and_prints_the_ranking():
    from explorer.cli import _rankings, build_parser, methods_from
    args = build_parser().parse_args(["run", "--image", "x.png", "--prompt", "q", "--methods", "fastv,dart",
                                      "--ranking", "per_grid"])
    assert {m.ranking for m in methods_from(args)} == {"per_grid"}
    assert make("fastv").ranking == "authors"  # the default: as the authors
    out = {"results": [{"method": "fastv", "ranking": "per_grid: each grid on its own"}, {"method": "vanilla"}]}
    assert _rankings(out) == ["ranking (fastv): per_grid: each grid on its own"]


def test_split_selection_keeps_merges_inside_one_grid():
    """A joined view's merged group goes back to the grid holding it; one spanning two grids is refused."""
    from explorer.methods import Selection
    from explorer.runtime.spans import split_selection
    merge = torch.zeros(2, 7)
    merge[0, [4, 6]] = 0.5
    merge[1, 0] = 1.0
    first, second = split_selection(Selection(kept=torch.tensor([1, 5]), merge=merge), [3, 4])
    assert (first.kept.tolist(), first.merge.tolist()) == ([1], [[1.0, 0.0, 0.0]])
    assert (second.kept.tolist(), second.merge.tolist()) == ([2], [[0.0, 0.5, 0.0, 0.5]])
    merge[1, 5] = 1.0
    with pytest.raises(ValueError, match="spans two grids"):
        split_selection(Selection(kept=torch.tensor([1]), merge=merge), [3, 4])
