"""Held-out evaluation: ``python -m explorer.toy.evaluate --model assets/toy-llava --seed 1 --n 300 [--json]``.

Draws a fresh set per task from the world generator (RNG seeded with ``eval-{seed}-{task}``, a stream the
trainer never uses), answers with stock greedy ``generate`` and reports exact-match accuracy per task
(grounding: Acc@IoU>=0.5 and mean IoU; existence also per POPE negative kind). The *blind* run registers a
forward hook that zeroes the projector's output, so every image token enters the LM as a zero vector:
the LM keeps the prompt and positions but sees nothing of the image. Chance = majority answer share.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from . import world
from .redraw import redraw
from .tokenizer import prompt_messages


def make_set(seed: int, n: int, haystack_images: int = 3, drawer: str = "world") -> dict[str, list[dict]]:
    """n samples per task; drawer "alt" draws the same scenes again with explorer.toy.redraw."""
    out = {}
    for task in world.TASKS:
        rng = random.Random(f"eval-{seed}-{task}")
        kw = {"n_images": haystack_images} if task == "haystack" else {}
        out[task] = [world.make_sample(rng, task, **kw) for _ in range(n)]
        if drawer == "alt":
            alt = random.Random(f"redraw-{seed}-{task}")
            out[task] = [redraw(s, alt) for s in out[task]]
    return out


@torch.no_grad()
def answer(model, processor, samples: list[dict], batch: int = 8, blind: bool = False) -> list[str]:
    """Greedy answers for samples (stock generate, left-padded batches)."""
    hook = None
    if blind:
        hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    preds = []
    try:
        for i in range(0, len(samples), batch):
            chunk = samples[i:i + batch]
            texts = [processor.apply_chat_template(prompt_messages(s["question"], len(s["images"])),
                                                   add_generation_prompt=True) for s in chunk]
            images = [im for s in chunk for im in s["images"]]
            enc = processor(images=images, text=texts, return_tensors="pt", padding=True).to(model.device)
            out = model.generate(**enc, do_sample=False, max_new_tokens=12)               # (B, T + new)
            preds += [p.strip() for p in processor.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                                skip_special_tokens=True)]
    finally:
        if hook is not None:
            hook.remove()
    return preds


def score(task: str, samples: list[dict], preds: list[str]) -> dict:
    n = len(samples)
    res = {"n": n}
    majority = Counter(s["answer"] for s in samples).most_common(1)[0][1] / n
    if task == "grounding":
        ious = []
        for s, p in zip(samples, preds):
            b = world.parse_box(p)
            ious.append(world.iou(b, s["box"]) if b else 0.0)
        res.update(acc=sum(i >= 0.5 for i in ious) / n, mean_iou=sum(ious) / n, chance=0.0)
        return res
    ok = [p == s["answer"] for s, p in zip(samples, preds)]
    res.update(acc=sum(ok) / n, chance=majority)
    if task == "existence":
        for kind in world.NEG_KINDS:
            sel = [o for o, s in zip(ok, samples) if s["meta"].get("negative") == kind]
            if sel:
                res[f"neg_{kind}"] = sum(sel) / len(sel)
    return res


def evaluate(model_path: str, seed: int, n: int, batch: int = 8, blind: bool = True,
             haystack_images: int = 3, tasks=None, drawer: str = "world") -> dict:
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path).eval()
    data = make_set(seed, n, haystack_images, drawer)
    report = {"model": model_path, "seed": seed, "n": n, "drawer": drawer, "tasks": {}, "blind": {}}
    t0 = time.time()
    for task, samples in data.items():
        if tasks and task not in tasks:
            continue
        report["tasks"][task] = score(task, samples, answer(model, processor, samples, batch))
        if blind:
            report["blind"][task] = score(task, samples, answer(model, processor, samples, batch, blind=True))
    report["seconds"] = round(time.time() - t0, 1)
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/toy-llava")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--haystack-images", type=int, default=3)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--no-blind", action="store_true")
    ap.add_argument("--drawer", choices=("world", "alt"), default="world",
                    help="alt: the same scenes drawn again by explorer.toy.redraw (another program's pixels)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rep = evaluate(a.model, a.seed, a.n, a.batch, not a.no_blind, a.haystack_images, a.tasks, a.drawer)
    if a.json:
        print(json.dumps(rep, indent=1))
        return
    print(f"model {rep['model']}  seed {rep['seed']}  n {rep['n']}/task  drawer {rep['drawer']}  "
          f"({rep['seconds']} s)")
    print(f"{'task':<10} {'acc':>6} {'extra':<34} {'blind':>6} {'chance':>6}")
    for task, r in rep["tasks"].items():
        extra = f"mean IoU {r['mean_iou']:.3f}" if task == "grounding" else \
            " ".join(f"{k[4:]} {v:.2f}" for k, v in r.items() if k.startswith("neg_"))
        b = rep["blind"].get(task, {}).get("acc", float("nan"))
        print(f"{task:<10} {r['acc']:6.3f} {extra:<34} {b:6.3f} {r['chance']:6.3f}")


if __name__ == "__main__":
    main()
