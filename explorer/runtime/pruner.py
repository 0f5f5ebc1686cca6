"""Cuts the sequence at layer K inside a stock decoder, keeping every survivor's original position.

Forward pre-hooks (with kwargs) on every decoder layer >= K: at layer K the prefill's hidden states are
cut to the kept tokens (plus merged tokens, each placed at its group's first position); on every layer
>= K the shared per-call tensors (rotary cos/sin, position ids, mask) are sliced to the same positions,
without touching the shared tensors in place. Layers < K keep the full sequence and their full KV cache.
The hooks are removed on exit, so the model is stock again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..methods import Method, SegmentView, Selection
from ..models.layout import ImageLayout
from .hooks import HookSet
from .probe import AttentionProbe
from .spans import select_units, split_budget, unit_budgets, units


@dataclass
class CutPlan:
    """What a run's cuts decided (both runtimes fill the same fields; a run without a cut keeps every token)."""

    selections: list[list[Selection]] = field(default_factory=list)
    order: torch.Tensor | None = None  # (L',) sequence positions surviving the last cut, ascending
    merged: dict[int, torch.Tensor] = field(default_factory=dict)  # sequence position -> (D,) merged hidden state
    scoring_ms: float = 0.0
    cuts: list[dict] = field(default_factory=list)  # per cut: layer, image tokens kept, survivors and groups per image
    seq_per_layer: list[int] = field(default_factory=list)  # sequence length entering each decoder layer
    image_per_layer: list[int] = field(default_factory=list)  # image tokens entering each decoder layer
    positions: str = "unchanged"  # how survivors are numbered for RoPE
    where: str = ""  # one sentence: where the cut happens
    raters: list[int] = field(default_factory=list)  # sequence positions of text raters (SparseVLM)
    counts_per_cut: bool = False  # results list tokens per cut and per layer (the staged runtime's plans)


def full_selections(layouts: list[ImageLayout]) -> list[list[Selection]]:
    """Every token of every segment kept (segment index): the selection of a run without a cut."""
    return [[Selection(kept=torch.arange(seg.count)) for seg in img.segments] for img in layouts]


def record_cut(plan: CutPlan, layer: int, layouts: list[ImageLayout], n_layers: int, prompt_len: int) -> None:
    """A single cut at `layer` into the plan's per-cut and per-layer counts (survivors in image index; a merged
    group survives as its first token)."""
    survivors, groups = [], []
    for img, segs in zip(layouts, plan.selections):
        kept = [seg.offset + int(i) for seg, sel in zip(img.segments, segs) for i in sel.kept]
        merged = [[seg.offset + i for i in g] for seg, sel in zip(img.segments, segs) for g in sel.groups()]
        survivors.append(sorted(kept + [g[0] for g in merged]))
        groups.append(merged)
    plan.cuts = [{"layer": layer, "image_tokens": sum(len(s) for s in survivors), "survivors": survivors,
                  "groups": groups}]
    total = sum(img.count for img in layouts)
    kept_len = len(plan.order)
    plan.seq_per_layer = [prompt_len if i < layer else kept_len for i in range(n_layers)]
    plan.image_per_layer = [total - (prompt_len - m) for m in plan.seq_per_layer]


class Pruner:
    """Context manager: installs the probe and cut hooks for one prefill + decode, then removes them."""

    def __init__(self, family, model, method: Method, layouts: list[ImageLayout], prompt_len: int,
                 fixed: list[list[Selection]] | None = None):
        self.family, self.model, self.method = family, model, method
        self.layouts, self.prompt_len, self.fixed = layouts, prompt_len, fixed
        self.layers = family.lm_layers(model)
        if method.layer >= len(self.layers):
            raise ValueError(f"layer K={method.layer} is out of range: the model has {len(self.layers)} layers")
        self.plan = CutPlan()
        if not method.prunes:
            self.plan.selections = full_selections(layouts)
        else:
            self.plan.positions = f"original ({family.positions})"
            self.plan.where = f"decoder layer {method.layer}'s input (layers below keep every token)"
        self.probe = None
        if method.prunes and method.needs() and fixed is None:
            self.probe = AttentionProbe(self.layers[method.layer - 1].self_attn, family.apply_rotary, self._rows)
        self.hooks = HookSet()

    def __enter__(self):
        if not self.method.prunes:
            return self
        try:
            if self.probe:
                self.hooks.pre(self.probe.attention, self.probe._hook, role="observe")
            for layer in self.layers[self.method.layer:]:
                self.hooks.pre(layer, self._on_layer)
            self.hooks.adopt(self.family.cut_hooks(self.model, self._order_at))  # e.g. Qwen3-VL's DeepStack
        except BaseException:
            self.hooks.remove()
            raise
        return self

    def _order_at(self, layer: int) -> torch.Tensor:
        """Original positions of the rows entering (and leaving) decoder `layer` in this prefill."""
        if self.plan.order is not None and self.method.prunes and layer >= self.method.layer:
            return self.plan.order
        return torch.arange(self.prompt_len)

    def __exit__(self, *exc):
        self.hooks.remove()

    def positions_at(self, layer: int, decoding: bool = False) -> torch.Tensor:
        """(L_layer,) sequence positions of the prompt rows decoder `layer` sees (and caches) in this run."""
        return self._order_at(layer)

    # ---- probe rows: which queries the method needs ------------------------------------------------
    def _rows(self, length: int) -> list[int]:
        rows = []
        for query in self.method.needs():
            if query == "last":
                rows.append(length - 1)
            elif query == "last_visual":
                rows.extend(img.start + img.last_patch for img in self.layouts)
            elif query == "all":
                rows.extend(range(length))
        return sorted(set(rows))

    # ---- the cut ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _on_layer(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (1, L or L' or 1, D)
        is_cut_layer = module is self.layers[self.method.layer]
        if is_cut_layer and hidden.shape[1] == self.prompt_len:
            hidden = self._cut(hidden)
            args, kwargs = self._replace_hidden(args, kwargs, hidden)
        return args, self._slice_shared(kwargs)

    def _cut(self, hidden: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        if self.probe is not None:
            self.plan.scoring_ms += self.probe.ms  # the probe ran inside layer K-1
        selections = self.fixed or [self._select(img, views) for img, views in zip(self.layouts, self._views(hidden))]
        self.plan.selections = selections
        keep = torch.ones(self.prompt_len, dtype=torch.bool)
        merged = {}
        for img, segs in zip(self.layouts, selections):
            for seg, sel in zip(img.segments, segs):
                base = img.start + seg.offset
                keep[base: base + seg.count] = False
                keep[base + sel.kept] = True
                if sel.merge is not None:
                    span = hidden[0, base: base + seg.count]  # (n, D)
                    for row in sel.merge:
                        rep = base + int(torch.nonzero(row).min())
                        keep[rep] = True
                        merged[rep] = row.to(span) @ span  # (D,)
        order = torch.nonzero(keep).flatten()  # (L',)
        self.plan.order, self.plan.merged = order, merged
        record_cut(self.plan, self.method.layer, self.layouts, len(self.layers), self.prompt_len)
        out = hidden[:, order.to(hidden.device)].clone()
        for rep, vector in merged.items():
            out[0, int(torch.searchsorted(order, rep))] = vector
        self._sync(hidden)
        self.plan.scoring_ms += (time.perf_counter() - started) * 1e3
        return out

    def _select(self, img: ImageLayout, views: list[SegmentView]) -> list[Selection]:
        """One selection per segment; segments of one ranking unit (NeXT's joint ranking) are selected together."""
        unit_list = units(self.method, img)
        return select_units(self.method.select, views, unit_list,
                            unit_budgets(self.method.budget(img.count), img, unit_list))

    def _views(self, hidden: torch.Tensor) -> list[list[SegmentView]]:
        rows = self.probe.rows if self.probe else None
        row_of = {p: i for i, p in enumerate(self.probe.query_positions)} if self.probe else {}
        views = []
        for img in self.layouts:
            segs = []
            for s, seg in enumerate(img.segments):
                lo = img.start + seg.offset
                hi = lo + seg.count
                attention = {}
                for query in self.method.needs():
                    if query == "last":
                        attention[query] = rows[row_of[self.prompt_len - 1], lo:hi]
                    elif query == "last_visual":
                        attention[query] = rows[row_of[img.start + img.last_patch], lo:hi]
                    elif query == "all":
                        attention[query] = rows[:, lo:hi].mean(0)
                segs.append(SegmentView(hidden=hidden[0, lo:hi], grid=seg.grid, last_hidden=hidden[0, -1],
                                        attention={k: v.cpu() for k, v in attention.items()},
                                        seed=img.index * 1000 + s))
            views.append(segs)
        return views

    # ---- slicing the per-call tensors every layer receives ------------------------------------------
    def _slice_shared(self, kwargs: dict) -> dict:
        order = self.plan.order
        if order is None:
            return kwargs
        kwargs = dict(kwargs)
        full = self.prompt_len
        cos, sin = kwargs["position_embeddings"]
        if cos.shape[-2] == full:
            idx = order.to(cos.device)
            kwargs["position_embeddings"] = (cos[..., idx, :], sin[..., idx, :])
        pos = kwargs.get("position_ids")
        if isinstance(pos, torch.Tensor) and pos.shape[-1] == full:
            kwargs["position_ids"] = pos[..., order.to(pos.device)]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            kv = torch.cat([order, torch.arange(full, mask.shape[-1])]).to(mask.device)
            if mask.shape[-2] == full:
                mask = mask[..., order.to(mask.device), :]
            kwargs["attention_mask"] = mask[..., kv]
        return kwargs

    @staticmethod
    def _replace_hidden(args, kwargs, hidden):
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    @staticmethod
    def _sync(tensor):
        if tensor.is_cuda:
            torch.cuda.synchronize(tensor.device)


def segment_budgets(k: int, img: ImageLayout) -> list[int]:
    """Split an image's budget over its segments in proportion to their sizes (the per-grid ranking's split)."""
    return split_budget(k, [seg.count for seg in img.segments])
