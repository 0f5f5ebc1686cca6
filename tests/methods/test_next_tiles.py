"""LLaVA-NeXT per vision-tower tile, newline tokens dropped, as the authors' code of VisionZip and VisPruner does
(span "tiles_no_newlines"): the image's budget shared evenly over the tiles (base image + each crop), each tile
ranked by its own [CLS] row, merged groups inside one tile; ranking="per_grid" keeps the old per-grid split."""
import pytest
import torch
from PIL import Image

from explorer.methods import make


@pytest.fixture(scope="module")
def next_model(engine, loaded):
    loaded = loaded["llava_next"]
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    image.paste((10, 10, 220), (0, 0, 20, 15))
    prepared = engine.prepare(loaded, [image], "what is the colour of the square ?")
    vision = loaded.model.config.vision_config
    per_tile = (vision.image_size // vision.patch_size) ** 2
    vidx = torch.cat(loaded.family.vision_index(loaded.model, prepared.inputs, prepared.layouts)[0])  # (n,)
    tile = torch.where(vidx >= 0, vidx // per_tile, -1)  # (n,) image index -> its vision tile, -1: newline
    return engine, loaded, prepared, tile


def _per_tile(tokens, tile):
    return torch.bincount(tile[torch.tensor(tokens, dtype=torch.long)], minlength=int(tile.max()) + 1).tolist()


@pytest.mark.parametrize("convention", ["paper", "final"])
def test_visionzip_selects_per_tile_with_its_own_cls(next_model, convention):
    engine, loaded, prepared, tile = next_model
    k = 12
    run = engine.run(loaded, prepared, make("visionzip", keep=k, convention=convention), max_new_tokens=1)
    assert run["ranking"].startswith("authors: per vision-tower tile") and "newline tokens dropped" in run["ranking"]
    entry = run["images"][0]
    kept, groups = entry["kept"], entry["groups"]  # image index
    assert run["tokens"]["kept_at_layer"] == k
    assert all(int(tile[i]) >= 0 for i in kept) and all(int(tile[i]) >= 0 for g in groups for i in g)  # no newline
    assert all(len({int(tile[i]) for i in g}) == 1 for g in groups)  # each contextual token inside one tile
    n_tiles = int(tile.max()) + 1
    assert n_tiles >= 3  # base + at least two crops
    per_tile = [a + b for a, b in zip(_per_tile(kept, tile), _per_tile([g[0] for g in groups], tile))]
    assert per_tile == [k // n_tiles] * n_tiles  # an even share: 4 per tile here
    assert _per_tile([g[0] for g in groups], tile) == [1] * n_tiles  # round(4 * 10/64) = 1 contextual per tile
    if convention == "final":  # no [CLS] slot: each tile's kept patches are the top of its own [CLS] row
        scores = torch.tensor(entry["scores"])
        for t in range(n_tiles):
            mine = [i for i in kept if int(tile[i]) == t]
            rows = torch.nonzero(tile == t).flatten()
            others = [int(i) for i in rows if int(i) not in mine]
            assert min(float(scores[i]) for i in mine) >= max(float(scores[i]) for i in others) - 1e-6


def test_visionzip_per_grid_option_keeps_one_selection_per_grid(next_model):
    engine, loaded, prepared, tile = next_model
    img = prepared.layouts[0]
    run = engine.run(loaded, prepared, make("visionzip", keep=12, ranking="per_grid"), max_new_tokens=1)
    assert run["ranking"].startswith("per_grid: each grid on its own")
    groups = run["images"][0]["groups"]
    grid_of = [0 if i < img.segments[1].offset else 1 for g in groups for i in g[:1]]
    assert sorted(grid_of) == [0, 1] and run["tokens"]["kept_at_layer"] == 12  # one contextual token per grid


@pytest.mark.parametrize("name", ["vispruner", "cdpruner"])
def test_vispruner_and_cdpruner_prune_each_tile(next_model, name):
    """As their authors' llava_arch.py: each tile (base image, each crop) keeps its even share, no newline token
    (their code strips '_unpad', so no newline is ever inserted); VisPruner before the projector by each tile's
    [CLS] row, CDPruner at the LM's input (one DPP per tile). per_grid: the old size split over the two grids."""
    engine, loaded, prepared, tile = next_model
    img = prepared.layouts[0]
    k = 12
    run = engine.run(loaded, prepared, make(name, keep=k), max_new_tokens=1)
    assert "newline tokens dropped" in run["ranking"]
    kept = run["images"][0]["kept"]
    assert len(kept) == k and all(int(tile[i]) >= 0 for i in kept)
    n_tiles = int(tile.max()) + 1
    assert _per_tile(kept, tile) == [k // n_tiles] * n_tiles
    split = engine.run(loaded, prepared, make(name, keep=k, ranking="per_grid"), max_new_tokens=1)
    kept = split["images"][0]["kept"]
    base = sum(i < img.segments[1].offset for i in kept)
    assert len(kept) == k and base == round(k * img.segments[0].count / img.count)  # 16 of 44 tokens: 4 + 8

