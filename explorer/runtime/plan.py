"""The plan of one run's cuts: stages and their budgets, which tokens survive each cut (survivor bookkeeping),
and what the run reports (CutPlan). No hooks and no model here: pruner.py calls these at the right places.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..methods import Method, SegmentView, Selection
from ..models.layout import ImageLayout
from .spans import image_budget, select_units, unit_budgets, units


@dataclass
class CutPlan:
    """What a run's cuts decided (a run without a cut keeps every token)."""

    selections: list[list[Selection]] = field(default_factory=list)
    order: torch.Tensor | None = None  # (L',) sequence positions surviving the last cut, ascending
    scoring_ms: float = 0.0
    cuts: list[dict] = field(default_factory=list)  # per cut: layer, image tokens kept, survivors and groups per image
    seq_per_layer: list[int] = field(default_factory=list)  # sequence length entering each decoder layer
    image_per_layer: list[int] = field(default_factory=list)  # image tokens entering each decoder layer
    positions: str = "unchanged"  # how survivors are numbered for RoPE
    where: str = ""  # one sentence: where the cut happens
    raters: list[int] = field(default_factory=list)  # sequence positions of text raters (SparseVLM)
    counts_per_cut: bool = False  # results list tokens per cut and per layer (several cuts, or cuts off layer K)
    ranked: str = ""  # how a multi-grid image was ranked where not as method.unit() says ("grids": no tile map)


def full_selections(layouts: list[ImageLayout]) -> list[list[Selection]]:
    """Every token of every segment kept (segment index): the selection of a run without a cut."""
    return [[Selection(kept=torch.arange(seg.count)) for seg in img.segments] for img in layouts]


def select_stage(method: Method, stage: int, img: ImageLayout, views: list[SegmentView]) -> list[Selection]:
    """One selection per segment; the segments of one ranking unit (NeXT's joint ranking) together, each unit with
    its share of the image's budget after this stage (at most its current survivors)."""
    unit_list = units(method, img)
    shares = unit_budgets(image_budget(method, img, stage), img, unit_list)
    budgets = [min(k, sum(views[s].n for s in unit)) for unit, k in zip(unit_list, shares)]
    return select_units(lambda view, k: method.select_stage(stage, view, k), views, unit_list, budgets)


def segment_budget(method: Method, stage: int, img: ImageLayout, s: int, available: int) -> int:
    """Segment s's share of the image's budget after `stage` when each grid is ranked on its own."""
    per_grid = [(i,) for i in range(len(img.segments))]
    return min(available, unit_budgets(image_budget(method, img, stage), img, per_grid)[s])


class Survivors:
    """Which tokens survive the cuts so far, per image and segment: each survivor (its segment index) with the
    segment indices it stands for (itself, or the members of the merged group it represents, first = itself),
    the first cut's scores and score parts, and each group's merge weights (for drawing)."""

    def __init__(self, layouts: list[ImageLayout]):
        self.layouts = layouts
        self.alive = [[{i: [i] for i in range(seg.count)} for seg in img.segments] for img in layouts]
        self.first_scores = [[None for _ in img.segments] for img in layouts]
        self.first_parts: list[list[dict]] = [[{} for _ in img.segments] for img in layouts]
        self.weights: dict[tuple, torch.Tensor] = {}  # (image, segment, rep) -> (n,) merge weights over the segment
        self.cuts: list[dict] = []

    def reps(self, img: ImageLayout, s: int) -> torch.Tensor:
        """(m,) segment indices of segment s's survivors, ascending."""
        return torch.tensor(sorted(self.alive[img.index][s]), dtype=torch.long)

    def apply(self, img: ImageLayout, s: int, sel: Selection, index: torch.Tensor) -> list[tuple[int, int | None]]:
        """Segment s keeps what `sel` selected from a view whose rows are `index` (segment indices). Returns the
        survivors as (segment index, merge row or None), the merged groups' representatives being their first
        member."""
        seg, alive = img.segments[s], self.alive[img.index][s]
        if self.first_scores[img.index][s] is None and sel.scores is not None:
            self.first_scores[img.index][s] = _scatter(sel.scores, index, seg.count)
            self.first_parts[img.index][s] = {k: _scatter(v, index, seg.count) for k, v in sel.parts.items()}
        new, out, segment_index = {}, [], index.tolist()
        for j in sel.kept.tolist():
            rep = segment_index[j]
            new[rep] = alive.get(rep, [rep])
            out.append((rep, None))
        for g, weights in enumerate(sel.merge if sel.merge is not None else []):
            members = [segment_index[j] for j in torch.nonzero(weights > 0).flatten().tolist()]
            rep = min(members)
            new[rep] = sorted(t for m in members for t in alive.get(m, [m]))
            out.append((rep, g))
            self.weights[(img.index, s, rep)] = _scatter(weights, index, seg.count)  # the method's own weights
        self.alive[img.index][s] = new
        return out

    def record(self, layer: int) -> None:
        """The cut at `layer` into the per-cut counts (survivors in image index; a group by its first token)."""
        survivors, groups = [], []
        for img, segs in zip(self.layouts, self.alive):
            survivors.append(sorted(seg.offset + r for seg, alive in zip(img.segments, segs) for r in alive))
            groups.append([[seg.offset + t for t in g] for seg, alive in zip(img.segments, segs)
                           for g in alive.values() if len(g) > 1])
        self.cuts.append({"layer": layer, "image_tokens": sum(len(s) for s in survivors), "survivors": survivors,
                          "groups": groups})

    def selections(self) -> list[list[Selection]]:
        """What survived the last cut, per image and segment (segment index): kept tokens, merged groups (the
        method's weights where they cover the group exactly, else uniform), the first cut's scores and parts."""
        out = []
        for img, segs in zip(self.layouts, self.alive):
            row = []
            for s, (seg, alive) in enumerate(zip(img.segments, segs)):
                kept = sorted(r for r, g in alive.items() if len(g) == 1)
                groups = [g for g in alive.values() if len(g) > 1]
                merge = None
                if groups:
                    merge = torch.zeros(len(groups), seg.count)  # (g, n) segment index
                    for j, g in enumerate(groups):
                        own = self.weights.get((img.index, s, g[0]))
                        exact = own is not None and torch.nonzero(own > 0).flatten().tolist() == g
                        merge[j] = own / own.sum() if exact else 0.0
                        if not exact:
                            merge[j, g] = 1.0 / len(g)
                row.append(Selection(kept=torch.tensor(kept, dtype=torch.long), merge=merge,
                                     scores=self.first_scores[img.index][s], parts=self.first_parts[img.index][s]))
            out.append(row)
        return out


def _scatter(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) float: `values` (one per view row) at their segment indices `index`, 0 elsewhere."""
    full = torch.zeros(n)
    full[index] = values.float().cpu()
    return full
