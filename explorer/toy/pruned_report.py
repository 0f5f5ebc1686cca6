"""What makes the toy model a teaching model: accuracy under pruning, and where its attention goes.

    python -m explorer.toy.pruned_report --model assets/toy-llava --seed 1 --n 100 [--json]

1. Accuracy per task (± binomial standard error) with every image pruned to 144 and 64 of 576 tokens for
   random, pooling, fastv and fastv_window (K = 2), beside the unpruned model, through the engine (the same
   code as the app and CLI).
2. Concentration of the last token's attention at layer 1 (what FastV scores with K = 2) on the asked-about
   object: the share of the top-25 % attended image tokens whose cell overlaps the object, against the
   object cells' share of the grid (what a uniform choice would get).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from ..engine import Engine
from ..methods import make
from ..settings import EVAL, PRESETS
from .evaluate import make_set, score

METHODS = PRESETS["toy_report"].methods
BUDGETS = PRESETS["toy_report"].budgets
TASKS = ("existence", "colour", "shape", "count", "grounding", "letter", "haystack")


def object_cells(box, grid) -> set[int]:
    """Row-major indices of the grid cells a normalised [x1, y1, x2, y2] box overlaps."""
    h, w = grid
    rows = range(int(box[1] * h), min(h, int(box[3] * h - 1e-9) + 1))
    cols = range(int(box[0] * w), min(w, int(box[2] * w - 1e-9) + 1))
    return {r * w + c for r in rows for c in cols}


def concentration(scores: list[float], cells: set[int]) -> tuple[float, float]:
    """(share of the top-25 % attended tokens inside `cells`, share of the grid that `cells` cover)."""
    n = len(scores)
    top = torch.topk(torch.tensor(scores), max(1, n // 4)).indices.tolist()
    return sum(i in cells for i in top) / len(top), len(cells) / n


def _concentrations(sample: dict, result: dict) -> list[tuple[float, float]]:
    """Per image holding an asked-about object: concentration of FastV's scores on that object's cells."""
    out = []
    for i, entry in enumerate(result["images"]):
        boxes = [sample["objects"][i][k]["box"] for img, k in sample["meta"]["targets"] if img == i]
        if boxes:
            out.append(concentration(entry["scores"], set().union(*(object_cells(b, entry["grid"]) for b in boxes))))
    return out


def standard_error(p: float, n: int) -> float:
    """Binomial standard error of an accuracy p measured on n questions."""
    return (p * (1 - p) / max(1, n)) ** 0.5


def run(model: str, seed: int, n: int, threads: int | None = EVAL.threads, tasks=TASKS) -> dict:
    engine = Engine(threads=threads)
    loaded = engine.model(model)
    data = make_set(seed, n)
    report = {"model": model, "seed": seed, "n": n, "accuracy": {}, "attention": {}}
    for task in tasks:
        samples = data[task]
        answers = {("vanilla", 576): []}
        inside, share = [], []
        for sample in samples:
            prep = engine.prepare(loaded, sample["images"], sample["question"])
            answers[("vanilla", 576)].append(engine.run(loaded, prep, make("vanilla"), EVAL.max_new_tokens)["answer"])
            for name in METHODS:
                for keep in BUDGETS:
                    result = engine.run(loaded, prep, make(name, keep=keep, layer=EVAL.layer), EVAL.max_new_tokens)
                    answers.setdefault((name, keep), []).append(result["answer"])
                    if name == "fastv" and keep == BUDGETS[0]:
                        for a, b in _concentrations(sample, result):
                            inside.append(a)
                            share.append(b)
        report["accuracy"][task] = {f"{m}@{k}": score(task, samples, preds) for (m, k), preds in answers.items()}
        if inside:
            report["attention"][task] = {"top25_in_object": round(statistics.mean(inside), 3),
                                         "object_share_of_grid": round(statistics.mean(share), 3),
                                         "samples": len(inside)}
    return report


def markdown(report: dict) -> str:
    cols = ["vanilla@576"] + [f"{m}@{k}" for k in BUDGETS for m in METHODS]
    lines = ["| task | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for task, row in report["accuracy"].items():
        cell = lambda r: f"{100 * r['acc']:.1f} ± {100 * standard_error(r['acc'], r['n']):.1f}"  # noqa: E731
        lines.append(f"| {task} | " + " | ".join(cell(row[c]) for c in cols) + " |")
    lines += ["", "| task | top-25 % attended tokens on the object | object's share of the grid | samples |",
              "|---|---|---|---|"]
    for task, a in report["attention"].items():
        lines.append(f"| {task} | {100 * a['top25_in_object']:.1f} % | {100 * a['object_share_of_grid']:.1f} % | "
                     f"{a['samples']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/toy-llava")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=EVAL.threads)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ",".join(TASKS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    report = run(a.model, a.seed, a.n, a.threads, tuple(a.tasks.split(",")))
    print(json.dumps(report, indent=1) if a.json else markdown(report))


if __name__ == "__main__":
    main()
