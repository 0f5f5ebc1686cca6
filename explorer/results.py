"""Turns one method's run into the plain, JSON-serialisable result the CLI, app and eval share."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from .boxes import parse_boxes, to_pixels
from .methods import Method, Selection
from .models.layout import ImageLayout
from .runtime.flops import FORMULA, lm_dims, prefill_flops


def image_entries(layouts: list[ImageLayout], selections: list[list[Selection]]) -> list[dict]:
    """Per image: grid, token count, kept indices, scores, merged groups (all relative to the image). An image's
    selections are one per segment, or one over the whole image where a merged group spans grids."""
    entries = []
    for img, segs in zip(layouts, selections):
        kept, groups, scores, parts = [], [], [], {}
        offsets = [seg.offset for seg in img.segments] if len(segs) == len(img.segments) else [0]
        for offset, sel in zip(offsets, segs):
            kept += (sel.kept + offset).tolist()
            groups += [[i + offset for i in g] for g in sel.groups()]
            if sel.scores is not None:
                scores += _floats(sel.scores)
            for name, part in sel.parts.items():
                parts.setdefault(name, []).extend(_floats(part))
        entry = {"grid": list(img.grid), "image_tokens": img.count, "kept": sorted(kept)}
        if len(scores) == img.count:
            entry["scores"] = scores
        if groups:
            entry["groups"] = groups
        if parts:
            entry["score_parts"] = parts
        if len(img.segments) > 1:
            entry["segments"] = [{"name": s.name, "offset": s.offset, "grid": list(s.grid)} for s in img.segments]
        entries.append(entry)
    return entries


def token_counts(layouts, selections, n_layers: int, layer: int, prunes: bool) -> dict:
    total = sum(img.count for img in layouts)
    kept = sum(sel.size for segs in selections for sel in segs) if prunes else total
    cut = layer if prunes else n_layers
    averaged = (cut * total + (n_layers - cut) * kept) / n_layers
    return {"image_total": total, "kept_at_layer": kept, "layer_averaged": round(averaged, 2)}


def staged_token_counts(layouts, plan) -> dict:
    """Progressive / pre-LLM methods: image tokens after every cut and entering every layer."""
    per_layer = plan.image_per_layer
    return {"image_total": sum(img.count for img in layouts), "kept_at_layer": plan.cuts[-1]["image_tokens"],
            "layer_averaged": round(sum(per_layer) / len(per_layer), 2),
            "per_cut": [{"layer": c["layer"], "image_tokens": c["image_tokens"]} for c in plan.cuts],
            "per_layer": per_layer}


def flops_entry(config, prompt_len: int, kept_len: int, layer: int, prunes: bool,
                per_layer: list[int] | None = None) -> dict:
    """`per_layer` (sequence length entering each layer) overrides the single-cut shape."""
    d, d_kv, m = lm_dims(config)
    n_layers = config.num_hidden_layers
    per_layer = per_layer or [prompt_len if (not prunes or i < layer) else kept_len for i in range(n_layers)]
    flops = prefill_flops(per_layer, d, d_kv, m)
    vanilla = prefill_flops([prompt_len] * n_layers, d, d_kv, m)
    return {"prefill": flops, "ratio_to_vanilla": round(flops / vanilla, 4), "formula": FORMULA,
            "tokens_per_layer": per_layer}


TIMING_NOTES = {
    "solo": "a separate run of this method alone: vision, prefill and decode measured in it",
    "solo-prefill": "vision and prefill measured in a separate run of this method alone (its hooks cannot start "
                    "from the shared prefill); decode per token measured alone on its own cache over its first "
                    "steps (decode_steps_timed), later steps ran batched with other methods (untimed); total = "
                    "vision + prefill + per-token decode x steps",
    "shared-prefix": "vision tower and decoder layers 0-{last} measured once in the shared unpruned prefill and "
                     "attributed; this method's own work before the projector (if any) counted in vision, as in a "
                     "solo run; its probes, cut and layers {first}- measured on their own; decode per "
                     "token measured alone on its own cache over its first steps (decode_steps_timed), later "
                     "steps ran batched with other methods (untimed); total = vision + prefill + per-token "
                     "decode x steps",
}


def timing_entry(timing: str = "solo", shared_below: int | None = None) -> dict:
    """How the timings were obtained: `timing` ("solo", "solo-prefill" or "shared-prefix") and one sentence."""
    note = TIMING_NOTES[timing].format(last=(shared_below or 0) - 1, first=shared_below)
    if timing == "shared-prefix" and not shared_below:
        note = ("vision tower measured once in the shared unpruned prefill and attributed; this method's own work "
                "before the projector (if any) counted in vision, as in a solo run; the rest on its own")
    entry = {"timing": timing, "timing_note": note}
    if shared_below is not None:
        entry["shared_layers"] = shared_below
    return entry


def timings_entry(runs: list, scoring: list[float], total: list[float], timing: dict | None = None) -> dict:
    med = statistics.median
    decode = [statistics.mean(r.decode_ms) if r.decode_ms else 0.0 for r in runs]
    prefill = [r.prefill_ms for r in runs]
    return {"vision_ms": round(med(r.vision_ms for r in runs), 3), "prefill_ms": round(med(prefill), 3),
            "decode_steps_timed": len(runs[0].decode_ms),
            "scoring_ms": round(med(scoring), 3), "decode_ms_per_token": round(med(decode), 3),
            "total_ms": round(med(total), 3), "repeats": len(runs),
            "prefill_ms_min": round(min(prefill), 3), "prefill_ms_max": round(max(prefill), 3),
            **(timing or timing_entry())}


def answer_boxes(answer: str, box_format: str, layouts, sizes) -> list[dict]:
    """Boxes in the answer, in pixels of the first uploaded image (crop/pad of its frame undone)."""
    if not layouts:
        return []
    first = layouts[0].segments[0]
    return [{"image": 0, "box": to_pixels(b, first.frame, sizes[0]), "raw": list(b)}
            for b in parse_boxes(answer, box_format, first.view_px)]


RANKING_UNITS = {"joint": "one ranking over the image span (base + high-res grids, newline tokens included)",
                 "tiles_no_newlines": "per vision-tower tile (base image and each crop), newline tokens dropped",
                 "grids": "each grid on its own, budget split by grid size"}


def ranking_entry(method: Method, layouts, ranked: str = "") -> dict:
    """How an image of several grids (LLaVA-NeXT) was ranked, for the table and panels; {} for one-grid images.
    `ranked`: the unit the run used where it could not follow the method's (a model without a tile map)."""
    if all(len(img.segments) == 1 for img in layouts):
        return {}
    source = (method.span_differs or "as the authors") if method.ranking == "authors" else "per-grid option"
    if ranked and ranked != method.unit():
        source = "this model maps no vision tiles"
    return {"ranking": f"{method.ranking}: {RANKING_UNITS[ranked or method.unit()]} ({source})"}


@dataclass
class MethodResult:
    """One method's run on one input, built once by `method_result`; `to_json()` is the CLI --json schema."""

    method: Method
    images: list[dict]
    answer: str
    answer_tokens: list[str]
    boxes: list[dict]
    tokens: dict
    timings: dict
    kv_cache_bytes: int
    kv_lengths: list[int]
    flops: dict
    positions: str
    system: dict  # device, dtype, attention backend, threads
    ranking: dict = field(default_factory=dict)
    cut: str = ""
    raters: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        m = self.method
        out = {"method": m.name, "label": m.label, "status": "ok", "convention": m.convention, **self.ranking,
               "config": m.config(), "images": self.images, "answer": self.answer,
               "answer_tokens": self.answer_tokens, "boxes": self.boxes, "tokens": self.tokens,
               "timings": self.timings, "kv_cache_bytes": self.kv_cache_bytes, "kv_lengths": self.kv_lengths,
               "flops": self.flops, "positions": self.positions}
        if self.cut:
            out["cut"] = self.cut
        if self.raters:
            out["raters"] = self.raters
        return {**out, **self.system}


def method_result(method: Method, loaded, prepared, runs, plan, scoring, total, threads: int,
                  timing: dict | None = None, answer: tuple[str, list[str]] | None = None) -> dict:
    """The result JSON of `runs` (repeats of one method) under `plan`; `answer`: (text, one text per token) as the
    engine decoded it (decoded here from the processor when not given)."""
    first = runs[0]
    text, pieces = answer or (decode_answer(loaded, first.tokens), token_texts(loaded, first.tokens))
    config = loaded.family.lm_config(loaded.model)
    images = image_entries(prepared.layouts, plan.selections)
    for i, entry in enumerate(images):
        if plan.cuts:
            entry["survivors"] = [{"layer": c["layer"], "kept": c["survivors"][i],
                                   **({"groups": c["groups"][i]} if c["groups"][i] else {})} for c in plan.cuts]
    if plan.cuts:
        tokens = staged_token_counts(prepared.layouts, plan)
        if not plan.counts_per_cut:  # one cut at K: the three counts say it all
            tokens = {k: tokens[k] for k in ("image_total", "kept_at_layer", "layer_averaged")}
        flops = flops_entry(config, prepared.prompt_len, 0, 0, True, per_layer=plan.seq_per_layer)
    else:  # no cut recorded: vanilla, or a run on another input (downsample's smaller image)
        kept_len = len(plan.order) if plan.order is not None else prepared.prompt_len
        tokens = token_counts(prepared.layouts, plan.selections, config.num_hidden_layers, method.layer,
                              method.prunes)
        flops = flops_entry(config, prepared.prompt_len, kept_len, method.layer, method.prunes)
    return MethodResult(
        method=method, ranking=ranking_entry(method, prepared.layouts, plan.ranked), images=images, answer=text,
        answer_tokens=pieces, boxes=answer_boxes(text, loaded.family.box_format, prepared.layouts, prepared.sizes),
        tokens=tokens, timings=timings_entry(runs, scoring, total, timing), kv_cache_bytes=first.kv_cache_bytes,
        kv_lengths=first.kv_lengths, flops=flops, positions=plan.positions, cut=plan.where, raters=plan.raters,
        system={"device": loaded.device, "dtype": loaded.dtype, "attention": loaded.attention, "threads": threads},
    ).to_json()


def not_applicable_result(method: Method, reason: str) -> dict:
    """A method this model or input cannot run: no answer, no costs, one sentence why (decided before model
    work, or for downsample when its re-processed input would exceed the budget)."""
    return {"method": method.name, "label": method.label, "status": "not_applicable", "reason": reason,
            "convention": method.convention, "config": method.config(), "images": [], "answer": None}


def decode_answer(loaded, ids: list[int]) -> str:
    """The answer text of generated token ids (special tokens skipped)."""
    return loaded.processor.batch_decode([ids], skip_special_tokens=True)[0].strip()


def token_texts(loaded, ids: list[int]) -> list[str]:
    """Each generated token as text, one entry per decode step (special tokens included, e.g. the final eos)."""
    tok = getattr(loaded.processor, "tokenizer", loaded.processor)
    return [tok.decode([t]) for t in ids]


def _floats(t: torch.Tensor) -> list[float]:
    return [round(v, 6) for v in t.flatten().tolist()]
