"""Tasks in lmms-eval's vocabulary: doc_to_visual / doc_to_text / doc_to_target, per-doc process_results,
per-metric aggregation and higher_is_better.

A *doc* is a plain dict: id, images (list of PIL, loaded lazily by the source), question, answer, and
task-specific fields (split, box in upload pixels, n_images). `process_results(doc, result)` turns one
engine result into per-metric values; `aggregate(metric, values)` folds a list of them.
"""
from __future__ import annotations

import re
import random
import statistics
from dataclasses import dataclass
from typing import Callable

from ..boxes import iou

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """lmms-eval style answer normalisation: lower case, no punctuation/articles, number words -> digits."""
    words = _PUNCT.sub(" ", str(text).lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def yes_no(text: str) -> str:
    """POPE's reading of an answer: 'yes' if the word yes appears first, else 'no' (lmms-eval's rule)."""
    words = normalise(text).split()
    for w in words:
        if w in ("yes", "no"):
            return w
    return "no"


def mean(values: list[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def _pairs(values):  # (pred, target) pairs of yes/no
    return [(v["pred"], v["target"]) for v in values]


def pope_precision(values) -> float:
    p = _pairs(values)
    tp = sum(a == "yes" and b == "yes" for a, b in p)
    fp = sum(a == "yes" and b == "no" for a, b in p)
    return tp / (tp + fp) if tp + fp else 0.0


def pope_recall(values) -> float:
    p = _pairs(values)
    tp = sum(a == "yes" and b == "yes" for a, b in p)
    fn = sum(a == "no" and b == "yes" for a, b in p)
    return tp / (tp + fn) if tp + fn else 0.0


def pope_f1(values) -> float:
    pr, rc = pope_precision(values), pope_recall(values)
    return 2 * pr * rc / (pr + rc) if pr + rc else 0.0


def pope_accuracy(values) -> float:
    return mean([float(a == b) for a, b in _pairs(values)])


def pope_yes_ratio(values) -> float:
    return mean([float(a == "yes") for a, _ in _pairs(values)])


@dataclass(frozen=True)
class Task:
    """One benchmark: how to prompt, what the target is, how to score and aggregate."""

    name: str
    metrics: dict[str, Callable]  # metric -> aggregation over the per-doc values
    higher_is_better: dict[str, bool]
    primary: str  # the metric a methods x benchmarks table shows
    group_by: str | None = None  # doc field giving sub-benchmarks (POPE split, haystack size)
    post_prompt: str = ""
    process: Callable = None  # (doc, result) -> {metric: value}

    def doc_to_visual(self, doc: dict) -> list:
        return doc["images"]

    def doc_to_text(self, doc: dict) -> str:
        return doc["question"] + (("\n" + self.post_prompt) if self.post_prompt else "")

    def doc_to_target(self, doc: dict):
        return doc.get("box") if self.name == "grounding" else doc["answer"]

    def process_results(self, doc: dict, result: dict) -> dict:
        return self.process(self, doc, result)

    def aggregate(self, metric: str, values: list) -> float:
        return float(self.metrics[metric](values))


def _pope(task, doc, result):
    v = {"pred": yes_no(result["answer"]), "target": yes_no(doc["answer"])}
    return {m: v for m in task.metrics}


def _exact(task, doc, result):
    return {"exact_match": float(normalise(result["answer"]) == normalise(doc["answer"]))}


def _haystack(task, doc, result):
    return {"accuracy": float(yes_no(result["answer"]) == yes_no(doc["answer"]))}


def _grounding(task, doc, result):
    target = doc["box"]  # [x1, y1, x2, y2] in pixels of the (first) uploaded image
    boxes = result.get("boxes") or []
    if not boxes:
        return {"iou": 0.0, "acc@0.5": 0.0, "centre_acc": 0.0}
    pred = boxes[0]["box"]
    cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
    value = iou(pred, target)
    inside = target[0] <= cx <= target[2] and target[1] <= cy <= target[3]
    return {"iou": value, "acc@0.5": float(value >= 0.5), "centre_acc": float(inside)}


_POPE = {"accuracy": pope_accuracy, "precision": pope_precision, "recall": pope_recall, "f1": pope_f1,
         "yes_ratio": pope_yes_ratio}

TASKS: dict[str, Task] = {
    "pope": Task("pope", _POPE, {"accuracy": True, "precision": True, "recall": True, "f1": True,
                                 "yes_ratio": False}, primary="f1", group_by="split", process=_pope),
    # (lmms-eval appends "Answer the question using a single word or phrase." to POPE and VQA questions: pass it as
    # the sweep's --post-prompt for real data; the toy model was trained without it)
    "grounding": Task("grounding", {"iou": mean, "acc@0.5": mean, "centre_acc": mean},
                      {"iou": True, "acc@0.5": True, "centre_acc": True}, primary="acc@0.5", group_by="split",
                      process=_grounding),
    "vqa": Task("vqa", {"exact_match": mean}, {"exact_match": True}, primary="exact_match", group_by="split",
                process=_exact),
    "haystack": Task("haystack", {"accuracy": mean}, {"accuracy": True}, primary="accuracy",
                     group_by="n_images", process=_haystack),
}


def get(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def score(task: Task, records: list[dict], metric: str | None = None) -> float:
    """Aggregate one metric over records (each holds `metrics` from process_results)."""
    metric = metric or task.primary
    return task.aggregate(metric, [r["metrics"][metric] for r in records])


def stderr(task: Task, records: list[dict], metric: str | None = None, resamples: int = 200) -> float:
    """Standard error of a metric over docs: of the mean for per-doc values (binary or real valued), a seeded
    bootstrap over docs for aggregate metrics such as F1; nan below two docs."""
    metric = metric or task.primary
    vals = [r["metrics"][metric] for r in records]
    if len(vals) < 2:
        return float("nan")
    if not isinstance(vals[0], dict):
        return statistics.stdev(vals) / len(vals) ** 0.5
    rng = random.Random(0)
    draws = [task.aggregate(metric, rng.choices(vals, k=len(vals))) for _ in range(resamples)]
    return statistics.stdev(draws)
