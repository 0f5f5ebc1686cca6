"""Answer-token attention through the engine's decode probe: equal to eager attention, a distribution over the
image tokens, zero on pruned tokens, and unchanged below a method's cut."""
from __future__ import annotations

import pytest
import torch
from explorer.testing import picture
from transformers import AutoModelForImageTextToText

from explorer.methods import make

PROMPT = "what is the colour of the shape ?"


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("layer, step", [(0, 0), (3, 2)])
def test_vanilla_rows_equal_eager_attention(engine, loaded, checkpoints, family, layer, step):
    lm = loaded[family]
    got = engine.answer_attention([picture()], PROMPT, make("vanilla"), layer, step, model_id=str(checkpoints[family]))
    prep = engine.prepare(lm, [picture()], PROMPT)
    fed = torch.tensor([got["token_ids"][:step]], dtype=torch.long)  # the answer so far, teacher-forced
    inputs = {**prep.inputs, "input_ids": torch.cat([prep.inputs["input_ids"], fed], 1),
              "attention_mask": torch.ones(1, prep.prompt_len + step, dtype=torch.long)}
    if "mm_token_type_ids" in inputs:  # Qwen2-VL: answer tokens are text (type 0)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(fed)], 1)
    eager = AutoModelForImageTextToText.from_pretrained(checkpoints[family], attn_implementation="eager").eval()
    with torch.no_grad():
        weights = eager(**inputs, output_attentions=True).attentions[layer][0].mean(0)  # (L, L) heads averaged
    img = prep.layouts[0]
    row = weights[prep.prompt_len - 1 + step, img.start: img.start + img.count]  # (n,)
    assert got["image_share"] == pytest.approx(float(row.sum()), abs=1e-5)
    assert torch.allclose(torch.tensor(got["images"][0]), row / row.sum(), atol=1e-5)


def test_pruned_rows_sum_to_one_over_the_kept_tokens(engine, checkpoints):
    model = str(checkpoints["llava"])
    fastv = make("fastv", keep=8, layer=2)
    kept = engine.compare([picture()], PROMPT, [fastv], model_id=model, max_new_tokens=4)["results"][0]
    kept = set(kept["images"][0]["kept"])
    vanilla = engine.answer_attention([picture()], PROMPT, make("vanilla"), 1, 1, model_id=model)
    for layer in (1, 3):
        got = engine.answer_attention([picture()], PROMPT, fastv, layer, 1, model_id=model)
        dist = got["images"][0]
        assert sum(dist) == pytest.approx(1.0, abs=1e-5)
        if layer >= fastv.layer:
            assert {i for i, v in enumerate(dist) if v > 0} <= kept, "pruned tokens hold nothing after the cut"
        else:
            assert dist == vanilla["images"][0], "below the cut the sequence is vanilla's"
    forced = engine.answer_attention([picture()], PROMPT, make("vanilla"), 3, 1, model_id=model,
                                     forced=got["token_ids"])
    assert forced["token_ids"] == got["token_ids"][:2]


def test_beside_vanilla_is_the_forced_vanilla_run_in_one_request(engine, checkpoints):
    model = str(checkpoints["llava"])
    fastv = make("fastv", keep=8, layer=2)
    both = engine.answer_attention([picture()], PROMPT, fastv, 3, 1, model_id=model, beside_vanilla=True)
    alone = engine.answer_attention([picture()], PROMPT, make("vanilla"), 3, 1, model_id=model,
                                    forced=both["token_ids"])
    assert {k: v for k, v in both.items() if k != "vanilla"} == \
        engine.answer_attention([picture()], PROMPT, fastv, 3, 1, model_id=model)
    assert both["vanilla"] == alone
    own = engine.answer_attention([picture()], PROMPT, make("vanilla"), 3, 1, model_id=model, beside_vanilla=True)
    assert own["vanilla"] == {k: v for k, v in own.items() if k != "vanilla"}  # vanilla beside itself: no cycle
