"""CDPruner, VisPruner and Downsample: hand cases, and each through the engine on the tiny models."""
import itertools

import pytest
import torch

from explorer.methods import MethodError, SegmentView, make
from explorer.methods.cdpruner import conditional_kernel, dpp_greedy, instruction_relevance
from explorer.methods.downsample import pooled_grid, resized_grid

from explorer.testing import run_plan


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# ---- CDPruner ---------------------------------------------------------------------------------------------
def test_cdpruner_dpp_prefers_the_diverse_of_two_equally_relevant_tokens():
    # Text along z. Token 0 is the most relevant; 1 and 2 are equally relevant (same z share), 1 nearly
    # repeats 0, 2 points elsewhere; 3 is the least relevant. After 0, the DPP takes 2, not its twin 1.
    x = unit([0.8, 0.0, 0.6], [0.98, 0.0, 0.2], [0.0, 0.98, 0.2], [-0.6, -0.6, -0.5])
    text = torch.tensor([[0.0, 0.0, 1.0]])
    v = SegmentView(hidden=x, grid=(2, 2), last_hidden=x[0], text_embeds=text)
    relevance = instruction_relevance(x, text)
    assert relevance[1] == pytest.approx(float(relevance[2])) and int(relevance.argmax()) == 0
    assert make("cdpruner", keep=2).select(v, 2).kept.tolist() == [0, 2]
    assert make("cdpruner", keep=2, quality="linear").select(v, 2).kept.tolist() == [0, 2]
    # The axis: θ = 1 is importance only (top-k relevance; the tie goes to the lower index, the twin) ...
    assert make("cdpruner", keep=2, theta=1.0).select(v, 2).kept.tolist() == [0, 1]
    # ... θ = 0 is diversity only: the instruction no longer matters.
    other = SegmentView(hidden=x, grid=(2, 2), last_hidden=x[0], text_embeds=torch.tensor([[1.0, -1.0, 0.0]]))
    assert torch.equal(make("cdpruner", keep=3, theta=0.0).select(v, 3).kept,
                       make("cdpruner", keep=3, theta=0.0).select(other, 3).kept)
    with pytest.raises(MethodError):
        make("cdpruner", keep=2, theta=1.5)
    with pytest.raises(MethodError):
        make("cdpruner", keep=2, quality="cubic")


def test_dpp_greedy_equals_brute_force_determinants():
    """Each greedy pick maximises det(L_Y) among one-token extensions (independent check by determinants)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 6, generator=g)
    kernel = conditional_kernel(x, torch.rand(10, generator=g, dtype=torch.float64) + 0.1)
    picked: list[int] = []
    for _ in range(6):
        best = max((i for i in range(10) if i not in picked),
                   key=lambda i: float(torch.linalg.det(kernel[picked + [i]][:, picked + [i]])))
        picked.append(best)
    assert dpp_greedy(kernel, 6).tolist() == picked
    # Rank 6: the 7th..10th picks cannot raise the determinant; they follow the diagonal, all distinct.
    full = dpp_greedy(kernel, 10).tolist()
    assert full[:6] == picked and sorted(full) == list(range(10))


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "llava_onevision", "qwen3_vl"])
def test_cdpruner_in_the_engine_scores_the_question_embeddings(engine, tiny, family):
    """The runtime's relevance is the cosine of the image tokens' input embeddings to the embeddings of the
    text after the image (captured independently at layer 0); exactly k tokens reach the LLM."""
    loaded, prepared = tiny[family]
    layout = prepared.layouts[0]
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("x", (args[0] if args else kwargs["hidden_states"])[0].clone())

    handle = loaded.family.lm_layers(loaded.model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    k = 3
    try:
        result = engine.run(loaded, prepared, make("cdpruner", keep=k), max_new_tokens=2)
    finally:
        handle.remove()
    assert result["tokens"]["kept_at_layer"] == k and len(result["images"][0]["kept"]) == k
    if len(layout.segments) == 1:
        x = captured["x"]
        image = x[layout.start: layout.start + layout.count]
        text = x[layout.start + layout.count:]
        expected = instruction_relevance(image, text)
        assert torch.allclose(torch.tensor(result["images"][0]["scores"], dtype=torch.float64), expected, atol=1e-5)
    if family == "llava_onevision":  # multi-grid, but no tile map: per grid, and the result says why
        assert result["ranking"] == ("authors: each grid on its own, budget split by grid size "
                                     "(this model maps no vision tiles)")


# ---- VisPruner --------------------------------------------------------------------------------------------
def test_vispruner_keeps_top_cls_then_drops_near_duplicates():
    # [CLS] attention falls with the index. k = 6, important = 0.34 -> int(2.04) = 2 important: 0, 1.
    # The other six, in [CLS] order, split A = 2, 4, 6 and B = 3, 5, 7; 2 repeats 3 and 6 repeats 7, 4 is
    # unlike every B token; the surplus is 2, so 2 and 6 go although they out-rank 3 and 7 by attention.
    e = torch.eye(6)
    x = torch.stack([e[4], e[4], e[0], e[0] + 0.01 * e[5], e[1], e[2], e[3], e[3] + 0.01 * e[5]])
    cls = torch.arange(8, 0, -1, dtype=torch.float32)
    v = SegmentView(hidden=x, grid=(2, 4), last_hidden=x[0], cls_attention=cls / cls.sum())
    assert make("vispruner", keep=6, important=0.34).select(v, 6).kept.tolist() == [0, 1, 3, 4, 5, 7]
    assert make("vispruner", keep=6, important=1.0).select(v, 6).kept.tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(MethodError):
        make("vispruner", keep=6, important=-0.1)


def test_vispruner_rounds_equal_a_per_round_recomputation():
    """The cosine matrix computed once gives the rounds the authors' per-round matching computes."""
    from explorer.methods.vispruner import drop_duplicates
    g = torch.Generator().manual_seed(5)
    x = torch.randn(61, 8, generator=g)
    unit = torch.nn.functional.normalize(x, dim=-1)

    def per_round(residual, keep):
        while (r := min(8, len(residual) - keep)) > 0:
            a, b = residual[0::2], residual[1::2]
            closest = (unit[a] @ unit[b].T).max(1).values
            residual = torch.cat([a[torch.argsort(closest, descending=True, stable=True)[r:]], b])
        return residual

    residual = torch.randperm(61, generator=g)
    for keep in (1, 5, 30, 60, 61):
        assert torch.equal(drop_duplicates(x, residual, keep), per_round(residual, keep))


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_vispruner_in_the_engine(engine, tiny, family):
    loaded, prepared = tiny[family]
    result = engine.run(loaded, prepared, make("vispruner", keep=5), max_new_tokens=2)
    assert result["tokens"]["kept_at_layer"] == 5 and result["positions"].startswith("renumbered")


def test_vispruner_not_applicable_without_cls(engine, tiny):
    loaded, prepared = tiny["qwen2_vl"]
    with pytest.raises(MethodError, match=r"\[CLS\]"):
        engine.run(loaded, prepared, make("vispruner", keep=2), max_new_tokens=2)


# ---- Downsample -------------------------------------------------------------------------------------------
def test_downsample_grids():
    assert pooled_grid((24, 24), 64) == (8, 8) and pooled_grid((24, 24), 90) == (9, 9)  # nearest square <= keep
    assert pooled_grid((24, 24), 576) == (24, 24) and pooled_grid((24, 24), 1) == (1, 1)
    assert resized_grid((3, 4), 6) == (2, 3)  # dynamic: the largest grid <= keep near the aspect ratio
    for grid, k in itertools.product([(24, 24), (28, 37), (1, 50), (50, 1), (3, 4)], [1, 2, 5, 17, 64, 200]):
        for gh, gw in (pooled_grid(grid, k), resized_grid(grid, k)):
            assert 1 <= gh <= grid[0] and 1 <= gw <= grid[1] and gh * gw <= max(1, min(k, grid[0] * grid[1]))


def test_downsample_pools_llava_to_the_nearest_square(engine, tiny):
    loaded, prepared = tiny["llava"]
    n = prepared.layouts[0].count  # 6 x 6
    result = engine.run(loaded, prepared, make("downsample", keep=5), max_new_tokens=2)
    image = result["images"][0]
    assert result["tokens"]["kept_at_layer"] == 4  # 2 x 2, the nearest square <= 5
    assert image["kept"] == [] and len(image["groups"]) == 4
    assert sorted(t for g in image["groups"] for t in g) == list(range(n))  # the groups partition the grid
    assert image["groups"][0] == [0, 1, 2, 6, 7, 8, 12, 13, 14]
    assert result["positions"].startswith("renumbered")


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_downsample_sends_qwen_a_smaller_image(engine, tiny, family):
    """64x48 px -> a 3x4 grid (12 tokens); keep 6 -> the image is resized to 48x32 px, a 2x3 grid, and the
    encoder itself yields 6 tokens (24 patches instead of 48)."""
    from explorer.testing import picture
    loaded, _ = tiny[family]
    prepared = engine.prepare(loaded, [picture()], "what is the colour of the square ?")
    assert prepared.layouts[0].grid == (3, 4)
    result = engine.run(loaded, prepared, make("downsample", keep=6), max_new_tokens=2)
    tokens, image = result["tokens"], result["images"][0]
    assert tokens["kept_at_layer"] == 6 and tokens["image_total"] == 12
    assert sorted(image["kept"] + [t for g in image.get("groups", []) for t in g]) == list(range(12))
    assert len(image["kept"]) + len(image.get("groups", [])) == 6
    assert result["vision"]["patches"] == 24 and result["vision"]["patches_vanilla"] == 48
    assert result["flops"]["tokens_per_layer"] == [prepared.prompt_len - 6] * 4
    assert result["kv_lengths"] == [prepared.prompt_len - 6] * 4 and result["method"] == "downsample"
    assert result["flops"]["ratio_to_vanilla"] < 1 and "48x32" in result["cut"]
    from explorer.cli import table
    assert "downsample: vision tower 24 of 48 patches" in table({"model": "tiny", "images": [], "results": [result]})


def test_downsample_targets_survive_the_real_qwen2_vl_processor():
    """With Qwen2-VL's own processor defaults (patch 14, merge 2, its min/max pixels), an image resized to
    `resized_grid` x 28 px comes out with exactly that grid: at most keep tokens, and within a few of it."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil()

    def grid(image):
        _, h, w = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
        return h // 2, w // 2

    photo = Image.new("RGB", (1036, 784), (120, 30, 200))
    assert grid(photo) == (28, 37)
    for keep, low in ((64, (7, 9)), (192, (12, 16)), (576, (21, 27))):
        assert resized_grid((28, 37), keep) == low
        assert grid(photo.resize((low[1] * 28, low[0] * 28))) == low and 0.95 * keep <= low[0] * low[1] <= keep


def test_downsample_refuses_when_the_processor_enlarges_past_the_budget(engine, tiny):
    """A processor whose minimum resolution is 4 tokens turns keep 2's 1x2 target back into a 2x3 grid (aspect
    kept): one line says so instead of a result over budget (Qwen3-VL's hub settings do this at keep 64:
    7x9 -> 8x10)."""
    from explorer.testing import picture

    from explorer.methods import MethodError
    loaded = engine.model(tiny["qwen2_vl"][0].model_id)  # the instance compare() will use
    size = loaded.processor.image_processor.size
    saved = size["shortest_edge"]
    size["shortest_edge"] = 4 * 16 * 16                                                  # 4 tokens of 16x16 px
    try:
        prepared = engine.prepare(loaded, [picture()], "what is the colour of the square ?")
        with pytest.raises(MethodError, match=r"enlarges image 0 back to a 2x3 grid \(6 tokens.*above the budget of 2"):
            engine.run(loaded, prepared, make("downsample", keep=2), max_new_tokens=2)
        both = engine.compare([picture()], "what is the colour of the square ?",
                              [make("downsample", keep=2), make("random", keep=2)], loaded.model_id, max_new_tokens=2)
        refused, ran = both["results"]
        assert refused["status"] == "not_applicable" and "raise keep" in refused["reason"]
        assert ran["method"] == "random" and len(ran["images"][0]["kept"]) == 2, "the other method's run is kept"
    finally:
        size["shortest_edge"] = saved
