"""Sweeps: every (task, doc, method config) once, as per-sample JSONL records; resumable and sharded.

Each process takes docs i with i % world_size == rank (rank/world from accelerate's PartialState under
`accelerate launch`, else env RANK/WORLD_SIZE, else 0/1) and appends to its own `records-r{rank}.jsonl`.
A record's key is (task, doc id, config); keys already in any records file are skipped, so an interrupted
sweep continues where it stopped. The last shard to finish writes the merged report (report.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..engine import Engine
from ..methods import REGISTRY, NotApplicable
from ..settings import EVAL, build_methods
from . import tasks as task_mod
from .sources import open_source


@dataclass(frozen=True)
class Config:
    """One method setting of a sweep."""

    method: str
    keep: int | None = None
    alpha: float | None = None
    layer: int = EVAL.layer
    convention: str = EVAL.convention  # budget convention (Method.convention): the authors' schedules, or exactly keep
    ranking: str = EVAL.ranking  # multi-grid images (Method.ranking): as the authors, or per grid

    @property
    def key(self) -> str:
        """The record key; the ranking is named only where it is not the default, so older sweeps resume."""
        ranking = "" if self.ranking == EVAL.ranking else f"|{self.ranking}"
        return f"{self.method}|k{self.keep}|a{self.alpha}|L{self.layer}|{self.convention}{ranking}"

    @property
    def label(self) -> str:
        if self.method == "vanilla":
            return "vanilla"
        return self.method + (f" a={self.alpha:g}" if self.alpha is not None else "")

    def build(self, seed: int = EVAL.seed):
        settings = dataclasses.replace(EVAL, keep=self.keep, layer=self.layer, seed=seed,
                                       convention=self.convention, ranking=self.ranking,
                                       alpha=EVAL.alpha if self.alpha is None else self.alpha)
        return build_methods([self.method], settings)[0]


def configs(methods: list[str], keeps: list[int], alphas: list[float] | None = None, layer: int = EVAL.layer,
            convention: str = EVAL.convention, ranking: str = EVAL.ranking) -> list[Config]:
    """vanilla once; every other method at every budget; the alpha method once per alpha value."""
    out: list[Config] = []
    shared = dict(layer=layer, convention=convention, ranking=ranking)
    for m in methods:
        if m not in REGISTRY:
            raise ValueError(f"unknown method {m!r}; known: {', '.join(REGISTRY)}")
        if m == "vanilla":
            out.append(Config("vanilla", **shared))
            continue
        for k in keeps:
            if m == "alpha":
                out += [Config("alpha", k, float(a), **shared) for a in (alphas or [EVAL.alpha])]
            else:
                out.append(Config(m, k, None, **shared))
    if alphas and "alpha" not in methods:
        out += [Config("alpha", k, float(a), **shared) for k in keeps for a in alphas]
    return out


def shard() -> tuple[int, int, str | None]:
    """(rank, world size, device) of this process: accelerate's PartialState under a distributed launcher
    (`accelerate launch --multi_gpu --num_processes N`, torchrun; CPU-only hosts use gloo), else env
    RANK/WORLD_SIZE, else (0, 1)."""
    env_rank, env_world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if "MASTER_ADDR" in os.environ and env_world > 1:
        try:
            import torch
            from accelerate import PartialState

            state = PartialState(cpu=not torch.cuda.is_available())
            if state.num_processes == env_world:
                dev = str(state.device)
                return state.process_index, state.num_processes, (dev if dev.startswith("cuda") else None)
        except Exception:  # noqa: BLE001 - fall back to the plain environment
            pass
    return env_rank, env_world, None


def record_key(task: str, doc_id: str, cfg_key: str) -> str:
    return f"{task}|{doc_id}|{cfg_key}"


def done_keys(out: Path) -> set[str]:
    keys = set()
    for f in sorted(out.glob("records-r*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError):
                continue  # a line cut by an interruption
    return keys


def make_record(task, doc: dict, cfg: Config, result: dict, scores: bool) -> dict:
    images = []
    for entry in result["images"]:
        img = {"grid": entry["grid"], "image_tokens": entry["image_tokens"], "kept": entry["kept"]}
        if scores and "scores" in entry:
            img["scores"] = entry["scores"]
        images.append(img)
    return {
        "key": record_key(task.name, doc["id"], cfg.key), "task": task.name, "doc_id": doc["id"],
        "split": doc.get("split"), "n_images": doc.get("n_images"), "config": cfg.key, "method": cfg.method,
        "keep": cfg.keep, "alpha": cfg.alpha, "layer": cfg.layer, "convention": cfg.convention,
        "ranking": cfg.ranking, "label": cfg.label,
        "question": doc["question"], "prompt": task.doc_to_text(doc), "target": task.doc_to_target(doc),
        "answer": result["answer"],
        "boxes": [b["box"] for b in result.get("boxes", [])], "metrics": task.process_results(doc, result),
        "images": images, "tokens": result["tokens"], "timings": result["timings"],
        "flops_ratio": result["flops"]["ratio_to_vanilla"], "kv_cache_bytes": result["kv_cache_bytes"],
        "device": result["device"], "dtype": result["dtype"], "threads": result["threads"],
    }


def sample_record(task, doc: dict, cfg: Config, outcome: dict | Exception, scores: bool) -> dict:
    """The record of one configuration on one sample: its result, or an "error" record (the report leaves those
    out) for a configuration this input or model refused."""
    if not isinstance(outcome, Exception):
        return make_record(task, doc, cfg, outcome, scores)
    rec = {"key": record_key(task.name, doc["id"], cfg.key), "task": task.name, "doc_id": doc["id"],
           "config": cfg.key, "error": str(outcome)}
    if isinstance(outcome, NotApplicable):
        rec["status"] = "not_applicable"
    return rec


def _groups(items: list, size: int) -> list[list]:
    return [items[k:k + size] for k in range(0, len(items), size)]


def run_sweep(out: str | Path, task_names: list[str], cfgs: list[Config], model_id: str | None = None,
              data: str | None = "toy", limit: int | None = None, seed: int = EVAL.seed, engine: Engine | None = None,
              max_new_tokens: int = EVAL.max_new_tokens, repeats: int = EVAL.repeats, scores: bool = True,
              rank: int | None = None, world: int | None = None, progress: bool = True, callback=None,
              report: bool = True, splits: tuple | None = None, post_prompt: str | None = None,
              threads: int | None = EVAL.threads, device: str | None = EVAL.device, solo: bool | None = None) -> Path:
    """Run (the local shard of) a sweep into `out`; returns the records file written by this process.

    Without an `engine` one is made on `device` (default: the shard's GPU under a distributed launcher) with
    `threads` torch threads. `callback(done, total, text)` reports progress (the web app's bar); `progress`
    shows tqdm.
    `post_prompt` is appended to every question (e.g. lmms-eval's "Answer the question using a single word
    or phrase." for real POPE/VQA files; the toy model was trained without one).
    All configurations of one sample run as one compare (Engine.run_many; at most `limits.max_methods` at a
    time): the vision tower and the unpruned layers below each cut run once per sample, and every configuration's
    answer and kept set are those of its own run. `solo` runs every configuration alone instead (Table 5-style
    timings; default: the engine's option); records say which in `timings.timing`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    r, w, shard_device = shard()
    rank, world = (r if rank is None else rank), (w if world is None else world)
    engine = engine or Engine(device=device or shard_device, threads=threads)
    loaded = engine.model(model_id)
    done = done_keys(out)
    path = out / f"records-r{rank}.jsonl"
    jobs = []
    for name in task_names:
        task = task_mod.get(name)
        if post_prompt:
            task = dataclasses.replace(task, post_prompt=post_prompt)
        src = open_source(name, data, limit, seed, splits)
        jobs += [(task, src, i) for i in range(len(src)) if i % world == rank]
    total = len(jobs) * len(cfgs)
    bar = tqdm(total=total, desc=f"sweep r{rank}/{world}", disable=not progress)
    warm, n_done = False, 0
    with path.open("a") as fh:
        for count, (task, src, i) in enumerate(jobs):
            doc = src[i]
            todo = [c for c in cfgs if record_key(task.name, doc["id"], c.key) not in done]
            bar.update(len(cfgs) - len(todo))
            n_done += len(cfgs) - len(todo)
            if not todo:
                continue
            prepared = engine.prepare(loaded, task.doc_to_visual(doc), task.doc_to_text(doc))
            methods = {cfg: cfg.build(seed * 1_000_003 + i) for cfg in todo}  # seeded per doc: Random draws anew
            if not warm:  # untimed warm-up so the first timings are not cold
                first = methods[todo[0]]
                warm = not isinstance(engine.run_many(loaded, prepared, [first], 1, solo=solo)[first], Exception)
            for group in _groups(todo, engine.limits.max_methods):  # one compare each: one trunk per sample
                outcomes = engine.run_many(loaded, prepared, [methods[c] for c in group], max_new_tokens, repeats,
                                           solo=solo)
                for cfg in group:
                    fh.write(json.dumps(sample_record(task, doc, cfg, outcomes[methods[cfg]], scores)) + "\n")
                    fh.flush()
                    bar.update(1)
                    n_done += 1
                    if callback:
                        callback(n_done, total, f"{task.name} {doc['id']} {cfg.label}")
    bar.close()
    meta = {"tasks": task_names, "configs": [c.__dict__ for c in cfgs], "model": loaded.model_id,
            "data": data, "limit": limit, "seed": seed, "world": world, "device": loaded.device,
            "threads": engine.threads, "solo": engine.solo if solo is None else solo,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / f"shard-{rank}-of-{world}.done").write_text(json.dumps(meta))
    if report and all((out / f"shard-{k}-of-{world}.done").exists() for k in range(world)):
        from .report import write_report

        write_report(out, meta)
    return path
