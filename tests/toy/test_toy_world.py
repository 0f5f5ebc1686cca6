"""Shapes-world generator: determinism, exact templates, valid boxes, task constraints, POPE negatives."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest

from explorer.toy import world
from explorer.toy.model import dense_targets

C, S = "|".join(world.COLOURS), "|".join(world.SHAPES)
TEMPLATES = {
    "existence": (rf"Is there a ({C}) ({S})\?", r"yes|no"),
    "colour": (rf"What colour is the ({S})\?", C),
    "shape": (rf"What shape is the ({C}) object\?", S),
    "count": (rf"How many ({S})s are there\?", r"[0-5]"),
    "grounding": (rf"Where is the ({C}) ({S})\?", r"\[(0\.\d\d|1\.00), (0\.\d\d|1\.00), (0\.\d\d|1\.00), (0\.\d\d|1\.00)\]"),
    "letter": (r"What letter is in the image\?", r"[a-z]"),
    "haystack": (rf"Is there a ({C}) ({S}) in the image with the ({C}) ({S})\?", r"yes|no"),
}


def pairs(objs):
    return [(o["colour"], o["shape"]) for o in objs if o["kind"] == "shape"]


@pytest.mark.parametrize("task", world.TASKS)
def test_deterministic_by_seed(task):
    a, b = (world.make_sample(random.Random(7), task) for _ in range(2))
    assert a["question"] == b["question"] and a["answer"] == b["answer"]
    assert [im.tobytes() for im in a["images"]] == [im.tobytes() for im in b["images"]]
    c = world.make_sample(random.Random(8), task)
    assert [im.tobytes() for im in c["images"]] != [im.tobytes() for im in a["images"]]


@pytest.mark.parametrize("task", world.TASKS)
def test_templates_and_constraints(task):
    rng = random.Random(f"test-{task}")
    q_re, a_re = TEMPLATES[task]
    for _ in range(25):
        s = world.make_sample(rng, task)
        m = re.fullmatch(q_re, s["question"])
        assert m, s["question"]
        assert re.fullmatch(a_re, s["answer"]), s["answer"]
        objs = s["objects"][0]
        for im in s["images"]:
            assert im.mode == "RGB" and im.width == im.height
        if task == "existence":
            assert (s["answer"] == "yes") == (m.groups() in pairs(objs))
        elif task == "colour":
            assert [p[1] for p in pairs(objs)].count(m[1]) == 1
            assert (s["answer"], m[1]) in pairs(objs)
        elif task == "shape":
            assert [p[0] for p in pairs(objs)].count(m[1]) == 1
            assert (m[1], s["answer"]) in pairs(objs)
        elif task == "count":
            assert int(s["answer"]) == [p[1] for p in pairs(objs)].count(m[1])
        elif task == "grounding":
            assert pairs(objs).count(m.groups()) == 1
            x1, y1, x2, y2 = world.parse_box(s["answer"])
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and [x1, y1, x2, y2] == s["box"]
            obj = next(o for o in objs if o["kind"] == "shape" and (o["colour"], o["shape"]) == m.groups())
            assert world.iou(obj["box"], s["box"]) > 0.8
        elif task == "letter":
            letters = [o["letter"] for o in objs if o["kind"] == "letter"]
            assert letters == [s["answer"].upper()]
        elif task == "haystack":
            target, anchor = m.groups()[:2], m.groups()[2:]
            assert 2 <= len(s["images"]) <= 5
            holders = [i for i, ob in enumerate(s["objects"]) if anchor in pairs(ob)]
            assert holders == [s["meta"]["anchor_image"]]
            assert (s["answer"] == "yes") == (target in pairs(s["objects"][holders[0]]))


def test_scene_description():
    rng = random.Random(3)
    for _ in range(40):
        img, objs, mask = world.make_scene(rng, with_mask=True)
        shapes = [o for o in objs if o["kind"] == "shape"]
        assert 1 <= len(shapes) <= 5 and sum(o["kind"] == "letter" for o in objs) <= 2
        assert mask.shape == (img.height, img.width) and mask.max() <= len(objs)
        for o in shapes:
            x1, y1, x2, y2 = o["box"]
            assert 0.08 - 1e-6 <= y2 - y1 <= 0.25 + 1e-6 and 0 <= x1 < x2 <= 1
        for i, a in enumerate(objs):  # non-overlapping
            for b in objs[i + 1:]:
                assert world.iou(a["box"], b["box"]) == 0


def test_pope_negatives():
    rng = random.Random(11)
    kinds = set()
    for _ in range(150):
        s = world.make_sample(rng, "existence")
        if s["answer"] == "no":
            kind = s["meta"]["negative"]
            kinds.add(kind)
            c, sh = re.fullmatch(TEMPLATES["existence"][0], s["question"]).groups()
            present = pairs(s["objects"][0])
            assert (c, sh) not in present
            if kind == "adversarial":
                assert any(c == p[0] or sh == p[1] for p in present)
    assert kinds == set(world.NEG_KINDS)


def test_box_format_roundtrip():
    assert world.format_box([0.1234, 0.5, 0.999, 1.2]) == "[0.12, 0.50, 1.00, 1.00]"
    assert world.parse_box("[0.12, 0.50, 1.00, 1.00]") == [0.12, 0.5, 1.0, 1.0]
    assert world.parse_box("red") is None


def test_dense_targets_shapes():
    img, objs, mask = world.make_scene(random.Random(2), 200, [("red", "circle"), ("blue", "square")],
                                       n_letters=1, with_mask=True)
    t = dense_targets(objs, mask, 12)
    assert t["colour"].shape == (144,) and t["bag"].shape == (144, 18) and t["box"].shape == (144, 4)
    for k in range(len(objs)):
        assert (t["obj"] == k + 1).any()
    assert set(np.unique(t["colour"])) <= {0, 1, 3}


def test_box_coordinate_target_is_ordinal():
    """A near-miss coordinate costs less than a far one; the true value's token is still the best."""
    import torch

    from explorer.toy.tokenizer import build_tokenizer
    from explorer.toy.losses import answer_loss, coordinate_table

    tok = build_tokenizer()
    coords = coordinate_table(tok)
    assert int((coords[1] == 1).sum()) == 101 and int((coords[1] == 2).sum()) == 101
    ids = tok.convert_tokens_to_ids
    labels = torch.tensor([[-100, ids("▁0.50")]])

    def loss_peaked_at(piece):
        logits = torch.zeros(1, 2, len(tok))
        logits[0, 0, ids(piece)] = 8.0
        return answer_loss(logits, labels, coords).item()

    assert loss_peaked_at("▁0.50") < loss_peaked_at("▁0.51") < loss_peaked_at("▁0.60") < loss_peaked_at("0.50")


def test_coordinate_rows_are_ordinal_and_object_probe_reads_object_cells_only():
    """init_coordinates: each coordinate row scores its own value highest among its form, and nearer values
    score higher than far ones. object_probe_loss: its gradient reaches object cells and nothing else."""
    import torch

    from explorer.toy.data import qa_batch
    from explorer.toy.tokenizer import PATCH, build_processor
    from explorer.toy.losses import OBJECT_PROBE, coordinate_table, init_coordinates, object_probe_loss
    from explorer.toy.train import build

    proc = build_processor()
    model = build(proc, 2 * PATCH, text_layers=2)
    init_coordinates(model, proc.tokenizer)
    value, form = coordinate_table(proc.tokenizer)
    rows = model.lm_head.weight.detach()
    for f in (1, 2):
        ids = (form == f).nonzero()[:, 0]                                                # (101,)
        ids = ids[value[ids].argsort()]
        scores = rows[ids] @ rows[ids].T                                                 # (101, 101)
        assert torch.equal(scores.argmax(1), torch.arange(len(ids)))
        assert scores[30, 31] > scores[30, 60] > scores[30, 99]
    b = qa_batch(random.Random(0), proc, ["grounding", "haystack"], 12, 3, n_images=2, dense=True)
    hidden = torch.randn(*b["input_ids"].shape, 128, requires_grad=True)                 # (B, T, D)
    object_probe_loss(torch.nn.Linear(128, sum(w for _, w in OBJECT_PROBE)), hidden, b, model.config.image_token_id).backward()
    touched = hidden.grad.abs().sum(-1) > 0                                              # (B, T)
    img = b["input_ids"] == model.config.image_token_id
    assert touched.any() and not (touched & ~img).any()
    assert int(touched.sum()) == int((b["dense"]["obj"] > 0).sum())
