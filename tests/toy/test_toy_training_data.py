"""The toy trainer's data choices that shape what the released model learns."""
from __future__ import annotations

import random

import torch

from explorer.toy import world
from explorer.toy.data import blind_samples, haystack_targets, release_positions, without_images

IMG = 4


def _ids(*parts):
    return torch.tensor([[t for p in parts for t in (p if isinstance(p, list) else [p])]])


def test_release_positions_are_stock_positions_at_the_release_grid():
    ids = _ids(1, 2, [IMG] * 576, 5, 6)
    assert release_positions(ids, IMG, 24, 24)[0].tolist() == list(range(580))


def test_coarse_image_takes_the_release_grids_positions():
    ids = _ids(1, [IMG] * 144, 7, [IMG] * 144, 8)
    pos = release_positions(ids, IMG, 12, 24)[0]
    first = pos[1:145]
    assert first[0].item() == 1 + 12          # centre of fine cells 0, 1, 24, 25 (12.5, rounded down)
    assert first[1].item() - first[0].item() == 2            # next coarse column: two fine columns
    assert first[12].item() - first[0].item() == 48          # next coarse row: two fine rows of 24
    assert pos[145].item() == 1 + 576                        # text after the image: as after 576 tokens
    assert pos[146].item() == 1 + 576 + 1 + 12                # the second image starts where it would
    assert pos[-1].item() == 1 + 576 + 1 + 576


def test_blind_samples_hide_the_images_and_their_targets():
    blind = torch.tensor([True, False])
    b = {"pixel_values": torch.zeros(4, 3, 2, 2), "focus": [torch.ones(8, dtype=torch.bool)] * 2,
         "dense": {"obj": torch.ones(4, 4, dtype=torch.long), "box": torch.ones(4, 4, 4)}}
    out, seen = without_images(b, blind)
    assert seen.tolist() == [False, False, True, True]                      # two images per sample
    assert not out["focus"][0].any() and out["focus"][1].all()
    assert out["dense"]["obj"][:2].eq(0).all() and out["dense"]["obj"][2:].eq(1).all()
    assert torch.equal(out["dense"]["box"], b["dense"]["box"])               # the vision tower's own targets stay
    assert blind_samples(3, 1000, 0.05).float().mean().item() < 0.1
    assert torch.equal(blind_samples(3, 8, 0.5), blind_samples(3, 8, 0.5))   # seeded by step: resumable


def test_haystack_targets_answer_the_question():
    """The haystack probe's targets: the anchor image's bag holds the anchor pair, and its bit for the
    target pair is the answer (yes = the target is in the anchor's image)."""
    rng = random.Random(3)
    pair = lambda c, s: world.COLOURS.index(c) * len(world.SHAPES) + world.SHAPES.index(s)  # noqa: E731
    for _ in range(20):
        s = world.make_sample(rng, "haystack", n_images=3)
        bag, target = haystack_targets(s)
        words = s["question"].rstrip("?").split()
        assert bag[pair(words[-2], words[-1])] == 1
        assert target == pair(words[3], words[4])
        assert bag[target] == (s["answer"] == "yes")
    bag, target = haystack_targets(world.make_sample(rng, "colour"))
    assert target == -1 and not bag.any()


def test_box_readout_span_covers_the_box_tokens():
    """box_readout_loss reads BOX_READ_SPAN positions from the last prompt token: the ones that predict
    "[", x1, ",", y1, ",", x2, ",", y2, so the tokens after them spell the batch's answer_box."""
    from explorer.toy.data import qa_batch
    from explorer.toy.losses import BOX_READ_SPAN
    from explorer.toy.tokenizer import build_processor

    processor = build_processor(patch_size=16)
    b = qa_batch(random.Random(5), processor, ["grounding", "colour"], grid=12)
    assert b["box_valid"].tolist() == [True, False]
    start = int(b["answer_start"][0])
    written = b["input_ids"][0, start:start + BOX_READ_SPAN].tolist()
    pieces = processor.tokenizer.convert_ids_to_tokens(written)
    assert [float(p.lstrip("▁")) for p in pieces[1::2]] == [round(v, 2) for v in b["answer_box"][0].tolist()]
