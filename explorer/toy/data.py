"""Batches for toy training: pixel tensors, dense per-patch targets and tokenised question/answer pairs."""
from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image, ImageFilter

from . import world
from .model import dense_targets
from .tokenizer import IMAGE_SIZE, MEAN, STD, prompt_messages

_MEAN = np.array(MEAN, np.float32)
_STD = np.array(STD, np.float32)


def pixels(img: Image.Image) -> torch.Tensor:
    """PIL -> (3, 192, 192) normalised, as the CLIP processor does for square images."""
    arr = np.asarray(img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), np.float32) / 255
    return torch.from_numpy(((arr - _MEAN) / _STD).transpose(2, 0, 1).copy())


def augment(rng: random.Random, img: Image.Image) -> Image.Image:
    """Half the time, one rendering change another drawing program could make (training only): soft edges
    (blur or a down-up resample, like anti-aliasing), or JPEG compression. Hue is never touched, so a
    colour's name stays true."""
    r = rng.random()
    if r < 0.5:
        return img
    if r < 0.65:
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if r < 0.8:
        w = img.width
        small = max(48, int(w * rng.uniform(0.45, 0.85)))
        return img.resize((small, small), Image.BILINEAR).resize((w, w), Image.BICUBIC)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=rng.randint(35, 90))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def scene_batch(rng: random.Random, n: int, grid: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n random scenes -> pixel_values (n, 3, 192, 192) and stacked dense targets (n, grid*grid, ...)."""
    pv, tg = [], []
    for _ in range(n):
        objs = world.sample_objects(rng, rng.randint(0, 5))
        img, meta, mask = world.make_scene(rng, None, objs, with_mask=True)
        pv.append(pixels(augment(rng, img)))
        tg.append(dense_targets(meta, mask, grid))
    return torch.stack(pv), {k: torch.from_numpy(np.stack([t[k] for t in tg])) for k in tg[0]}


def encode(processor, question: str, n_images: int, grid: int, answer: str | None = None) -> list[int]:
    """Token ids of the chat prompt (and answer + eos when given), each <image> expanded to grid^2 tokens."""
    text = processor.apply_chat_template(prompt_messages(question, n_images, answer),
                                         add_generation_prompt=answer is None)
    text = text.replace("<image>", "<image>" * (grid * grid))
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def qa_batch(rng: random.Random, processor, tasks: list[str], grid: int, max_objects: int = 5,
             n_images: int | None = None, dense: bool = False) -> dict:
    """A batch of QA samples (one task per sample; haystack uses n_images images each).

    Returns input_ids / attention_mask / labels (B, T) right-padded, pixel_values (B * images, 3, H, W),
    tasks, answer_start (B,) = index of the first answer token; with ``dense``, per-image dense targets.
    """
    tok = processor.tokenizer
    seqs, pvs, starts, tg, focus, hay_bag, hay_target, boxes = [], [], [], [], [], [], [], []
    for task in tasks:
        s = world.make_sample(rng, task, max_objects=max_objects, n_images=n_images, with_mask=dense)
        bag, target = haystack_targets(s)
        hay_bag.append(bag)
        hay_target.append(target)
        boxes.append(s["box"] or [float("nan")] * 4)
        if dense:
            dt = [dense_targets(o, m, grid) for o, m in zip(s["objects"], s["masks"])]
            tg += dt
            cells = np.zeros(len(dt) * grid * grid, bool)                          # target cells, all images
            for i, k in s["meta"]["targets"]:
                cells[i * grid * grid:(i + 1) * grid * grid] |= dt[i]["obj"] == k + 1
            focus.append(cells)
        full = encode(processor, s["question"], len(s["images"]), grid, s["answer"])
        n_ans = len(tok(" " + s["answer"], add_special_tokens=False)["input_ids"]) + 1      # + eos
        seqs.append(full)
        starts.append(len(full) - n_ans)
        pvs += [pixels(augment(rng, im)) for im in s["images"]]
    T = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), T), tok.pad_token_id)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    lab = torch.full((len(seqs), T), -100)
    for i, (x, st) in enumerate(zip(seqs, starts)):
        ids[i, :len(x)] = torch.tensor(x)
        att[i, :len(x)] = 1
        lab[i, st:len(x)] = torch.tensor(x[st:])
    out = {"input_ids": ids, "attention_mask": att, "labels": lab, "pixel_values": torch.stack(pvs),
           "tasks": list(tasks), "answer_start": torch.tensor(starts),
           "hay_bag": torch.from_numpy(np.stack(hay_bag)), "hay_target": torch.tensor(hay_target),
           "answer_box": torch.tensor(boxes), "box_valid": torch.tensor([t == "grounding" for t in tasks])}
    if dense:
        out["dense"] = {k: torch.from_numpy(np.stack([t[k] for t in tg])) for k in tg[0]}
        out["focus"] = [torch.from_numpy(f) for f in focus]   # per sample: (n_images * grid^2,) bool
    return out


def haystack_targets(sample: dict) -> tuple[np.ndarray, int]:
    """(18,) bag of (colour, shape) pairs in a haystack's anchor image and the index of the asked-for target
    pair (colour-major, as dense_targets' bag); zeros and -1 for other tasks."""
    bag = np.zeros(len(world.COLOURS) * len(world.SHAPES), np.float32)
    if sample["task"] != "haystack":
        return bag, -1
    pair = lambda c, s: world.COLOURS.index(c) * len(world.SHAPES) + world.SHAPES.index(s)  # noqa: E731
    for o in sample["objects"][sample["meta"]["anchor_image"]]:
        if o["kind"] == "shape":
            bag[pair(o["colour"], o["shape"])] = 1
    words = sample["question"].rstrip("?").split()           # Is there a {c} {s} in the image with the ...
    return bag, pair(words[3], words[4])


def release_positions(input_ids: torch.Tensor, image_token_id: int, grid: int, release_grid: int) -> torch.Tensor:
    """(B, T) position ids that give a batch drawn at a coarse training grid the geometry of the release grid.

    Each image run of grid² tokens takes release_grid² positions, as it will in the released model, and a
    coarse cell (r, c) sits at (about) the centre of the f × f fine cells it covers, f = release_grid / grid:
    run start + release_grid·(f·r + (f − 1)/2) + f·c + (f − 1)/2, rounded down. Text keeps one position per token. Without this the language model
    learns distances (answer to object, row stride) that change when the grid does; the 12 → 24 conversion
    then breaks what depends on them (the y coordinate, letters). A training-data choice: the released
    model is run with the stock positions.
    """
    f = release_grid // grid
    k = torch.arange(grid * grid)
    cell = f * release_grid * (k // grid) + f * (k % grid) + (f - 1) * (release_grid + 1) // 2  # (grid²,)
    pos = torch.zeros_like(input_ids)
    for i, ids in enumerate(input_ids.tolist()):
        p, j = 0, 0
        while j < len(ids):
            if ids[j] == image_token_id:
                pos[i, j:j + grid * grid] = p + cell
                p, j = p + release_grid * release_grid, j + grid * grid
            else:
                pos[i, j] = p
                p, j = p + 1, j + 1
    return pos


def blind_samples(step: int, n: int, share: float) -> torch.Tensor:
    """(n,) bool: the samples of this step trained blind, image features zeroed as evaluate's blind run does,
    with their true answers: the model learns what a question alone predicts (the prior), so with nothing to
    see it answers near chance instead of something arbitrary. A loss on answers only."""
    g = torch.Generator().manual_seed(1_000_003 + step)
    return torch.rand(n, generator=g) < share


def without_images(b: dict, blind: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """b with the blind samples' attention targets and object-probe cells emptied (nothing to look at), and
    (images,) bool: which images are seen."""
    seen = (~blind).repeat_interleave(b["pixel_values"].shape[0] // len(blind))            # (images,)
    if "hay_target" in b:
        b = {**b, "hay_target": b["hay_target"].masked_fill(blind, -1), "box_valid": b["box_valid"] & ~blind}
    if "dense" not in b:
        return b, seen
    dense = {k: v * seen.view(-1, *[1] * (v.dim() - 1)).to(v.dtype) if k in ("obj", "count", "letter") else v
             for k, v in b["dense"].items()}
    focus = [torch.zeros_like(f) if bl else f for f, bl in zip(b["focus"], blind.tolist())]
    return {**b, "dense": dense, "focus": focus}, seen
