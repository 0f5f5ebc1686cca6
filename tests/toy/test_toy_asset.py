"""The released toy checkpoint and its processor: stock Auto classes, offline, 576 image tokens, chat template."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration  # noqa: E402

from explorer.toy import world  # noqa: E402
from explorer.toy.model import to_grid  # noqa: E402
from explorer.toy.tokenizer import build_processor, prompt_messages  # noqa: E402

ASSET = Path(__file__).resolve().parents[2] / "assets" / "toy-llava"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def released():
    if not (ASSET / "model.safetensors").exists():
        pytest.skip("assets/toy-llava not built")
    return AutoProcessor.from_pretrained(ASSET), AutoModelForImageTextToText.from_pretrained(ASSET).eval()


def test_tokenizer_one_token_per_answer():
    tok = build_processor().tokenizer
    for w in world.all_answer_words():
        ids = tok(" " + w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, w
    for i in range(101):
        box = world.format_box([i / 100] * 4)
        ids = tok(" " + box, add_special_tokens=False)["input_ids"]
        assert len(ids) == 9 and tok.unk_token_id not in ids
        assert tok.decode(ids) == box


def test_chat_template_roundtrip():
    proc = build_processor()
    text = proc.apply_chat_template(prompt_messages("Is there a red circle?", 2), add_generation_prompt=True)
    assert text == "<s>USER:<image><image> Is there a red circle? ASSISTANT:"
    full = proc.apply_chat_template(prompt_messages("What letter is in the image?", 1, "q"))
    assert full.endswith("ASSISTANT: q</s>")
    ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert proc.tokenizer.unk_token_id not in ids
    assert proc.tokenizer.decode(ids, skip_special_tokens=True) == "USER: Is there a red circle? ASSISTANT:"


def test_grid_conversion_gives_576_tokens():
    from explorer.toy.train import build
    proc = build_processor()
    small = build(proc, 16)
    big = to_grid(small, 8)
    assert big.config.vision_config.patch_size == 8 and big.config.image_seq_length == 576
    pv = torch.zeros(1, 3, 192, 192)
    feats = big.get_image_features(pixel_values=pv)
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    assert feats[0].shape[-2] == 576


def test_asset_loads_offline_and_answers(released):
    proc, model = released
    assert isinstance(model, LlavaForConditionalGeneration)
    assert (ASSET / "model.safetensors").stat().st_size <= 30 * 2**20
    s = world.make_sample(random.Random(0), "haystack", n_images=2)
    text = proc.apply_chat_template(prompt_messages(s["question"], 2), add_generation_prompt=True)
    enc = proc(images=s["images"], text=text, return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 2 * 576
    assert enc["pixel_values"].shape == (2, 3, 192, 192)
    assert model.generation_config.eos_token_id == proc.tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=12)
    ans = proc.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
    assert ans in ("yes", "no"), f"a haystack question is answered yes or no, got {ans!r}"
    assert s["answer"] in ("yes", "no")
