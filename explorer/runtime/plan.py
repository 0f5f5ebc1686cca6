"""The plan of one run's cuts: stages and their budgets, which tokens survive each cut (survivor bookkeeping),
and what the run reports (CutPlan). No hooks and no model here: pruner.py calls these at the right places.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..methods import Method, SegmentView, Selection
from ..models.layout import ImageLayout
from .spans import image_budget, select_joined, select_units, unit_budgets, units


@dataclass
class CutPlan:
    """What a run's cuts decided (a run without a cut keeps every token)."""

    selections: list[list[Selection]] = field(default_factory=list)  # per image: per segment, or one (see Survivors)
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


def unit_selections(method: Method, stage: int, img: ImageLayout,
                    views: list[SegmentView]) -> list[tuple[tuple[int, ...], SegmentView, Selection]]:
    """Per ranking unit (NeXT's joint ranking: all grids at once): its segments, the view it was ranked on (unit
    rows: its segments' rows in order) and the selection; a merged group may hold rows of several grids."""
    unit_list = units(method, img)
    chosen = select_joined(lambda view, k: method.select_stage(stage, view, k), views, unit_list,
                           _unit_budgets(method, stage, img, views, unit_list))
    return [(unit, view, sel) for unit, (view, sel) in zip(unit_list, chosen)]


def select_stage(method: Method, stage: int, img: ImageLayout, views: list[SegmentView]) -> list[Selection]:
    """One selection per segment; the segments of one ranking unit (NeXT's joint ranking) together, split back per
    segment (a merged group across grids is refused: the cuts before the projector need one grid per group)."""
    unit_list = units(method, img)
    return select_units(lambda view, k: method.select_stage(stage, view, k), views, unit_list,
                        _unit_budgets(method, stage, img, views, unit_list))


def _unit_budgets(method: Method, stage: int, img: ImageLayout, views: list[SegmentView],
                  unit_list: list[tuple[int, ...]]) -> list[int]:
    """Each unit's share of the image's budget after `stage`, at most its current survivors."""
    shares = unit_budgets(image_budget(method, img, stage), img, unit_list)
    return [min(k, sum(views[s].n for s in unit)) for unit, k in zip(unit_list, shares)]


def segment_budget(method: Method, stage: int, img: ImageLayout, s: int, available: int) -> int:
    """Segment s's share of the image's budget after `stage` when each grid is ranked on its own."""
    per_grid = [(i,) for i in range(len(img.segments))]
    return min(available, unit_budgets(image_budget(method, img, stage), img, per_grid)[s])


class Survivors:
    """Which tokens survive the cuts so far, per image (image index): each survivor with the tokens it stands for
    (itself, or the members of the merged group it represents, first = itself; a group may span LLaVA-NeXT's
    grids when the method ranks them jointly), the first cut's scores and score parts, and each group's merge
    weights (for drawing)."""

    def __init__(self, layouts: list[ImageLayout]):
        self.layouts = layouts
        self.alive = [{i: [i] for i in range(img.count)} for img in layouts]  # per image: rep -> members
        self.scored = [torch.zeros(img.count, dtype=torch.bool) for img in layouts]  # (n,) first scores set
        self.first_scores = [torch.zeros(img.count) for img in layouts]  # (n,) image index
        self.first_parts: list[dict] = [{} for _ in layouts]  # per image: name -> (n,) image index
        self.weights: dict[tuple, torch.Tensor] = {}  # (image, rep) -> (n,) merge weights over the image
        self.cuts: list[dict] = []

    def reps(self, img: ImageLayout, s: int) -> torch.Tensor:
        """(m,) segment indices of segment s's survivors, ascending."""
        seg = img.segments[s]
        return torch.tensor(sorted(r - seg.offset for r in self.alive[img.index]
                                   if seg.offset <= r < seg.offset + seg.count), dtype=torch.long)

    def apply(self, img: ImageLayout, segments: tuple[int, ...], sel: Selection,
              index: torch.Tensor) -> list[tuple[int, int | None]]:
        """The survivors of `segments` (one, or a joint unit's) become what `sel` selected from the view whose rows
        are `index` (image index); the rest of those segments' survivors are dropped. Returns the new survivors as
        (image index, merge row or None), the merged groups' representatives being their first member."""
        alive, i = self.alive[img.index], img.index
        rows = ~self.scored[i][index]  # (m,) view rows scored for the first time
        if sel.scores is not None and rows.any():
            fresh = index[rows]  # (f,) their image indices
            self.first_scores[i][fresh] = sel.scores.float().cpu()[rows]
            for name, part in sel.parts.items():
                self.first_parts[i].setdefault(name, torch.zeros(img.count))[fresh] = part.float().cpu()[rows]
            self.scored[i][fresh] = True
        new, out, image_index = {}, [], index.tolist()
        for j in sel.kept.tolist():
            rep = image_index[j]
            new[rep] = alive[rep]
            out.append((rep, None))
        for g, weights in enumerate(sel.merge if sel.merge is not None else []):
            members = [image_index[j] for j in torch.nonzero(weights > 0).flatten().tolist()]
            rep = min(members)
            new[rep] = sorted(t for m in members for t in alive[m])
            out.append((rep, g))
            self.weights[(i, rep)] = _scatter(weights, index, img.count)  # the method's own weights
        spans = [(img.segments[s].offset, img.segments[s].offset + img.segments[s].count) for s in segments]
        others = [(r, g) for r, g in alive.items() if not any(lo <= r < hi for lo, hi in spans)]
        self.alive[i] = dict(sorted([*others, *new.items()]))
        return out

    def record(self, layer: int) -> None:
        """The cut at `layer` into the per-cut counts (survivors in image index; a group by its first token)."""
        survivors = [sorted(alive) for alive in self.alive]
        groups = [[g for g in alive.values() if len(g) > 1] for alive in self.alive]
        self.cuts.append({"layer": layer, "image_tokens": sum(len(s) for s in survivors), "survivors": survivors,
                          "groups": groups})

    def selections(self) -> list[list[Selection]]:
        """What survived the last cut, per image: one selection per segment (segment index), or one over the whole
        image (image index) where a merged group spans grids. Each: kept tokens, merged groups (the method's
        weights where they cover the group exactly, else uniform), the first cut's scores and parts."""
        out = []
        for img, alive in zip(self.layouts, self.alive):
            segment_of = {t: s for s, seg in enumerate(img.segments) for t in range(seg.offset, seg.offset + seg.count)}
            across = any(len({segment_of[t] for t in g}) > 1 for g in alive.values())
            spans = [(0, img.count)] if across else [(seg.offset, seg.count) for seg in img.segments]
            out.append([self._selection(img, alive, offset, n) for offset, n in spans])
        return out

    def _selection(self, img: ImageLayout, alive: dict, offset: int, n: int) -> Selection:
        """The survivors whose representative lies in image indices [offset, offset + n), in that span's index."""
        i, mine = img.index, {r: g for r, g in alive.items() if offset <= r < offset + n}
        kept = [r - offset for r, g in mine.items() if len(g) == 1]
        groups = [g for g in mine.values() if len(g) > 1]
        merge = None
        if groups:
            merge = torch.zeros(len(groups), n)  # (g, n) span index
            for j, g in enumerate(groups):
                own = self.weights.get((i, g[0]))
                exact = own is not None and torch.nonzero(own > 0).flatten().tolist() == g
                merge[j] = own[offset: offset + n] / own.sum() if exact else 0.0
                if not exact:
                    merge[j, [t - offset for t in g]] = 1.0 / len(g)
        scored = bool(self.scored[i][offset: offset + n].any())
        return Selection(kept=torch.tensor(kept, dtype=torch.long), merge=merge,
                         scores=self.first_scores[i][offset: offset + n] if scored else None,
                         parts={k: v[offset: offset + n] for k, v in self.first_parts[i].items()} if scored else {})


def _scatter(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) float: `values` (one per view row) at their indices `index`, 0 elsewhere."""
    full = torch.zeros(n)
    full[index] = values.float().cpu()
    return full
