"""Ranking units on an image of several grids (LLaVA-NeXT: base grid + high-res grid with newline tokens).

A method's `unit()` says how its authors rank such an image: "joint" (one ranking over the whole span, newline
tokens candidates like any token), "tiles_no_newlines" (one ranking per vision-tower tile, newlines dropped; see
vision_stage.py) or "grids" (each grid on its own, the budget split by grid size). Index spaces: a segment view's
rows are *segment rows*; a joined view's rows are those rows concatenated in segment order (*unit rows*).
"""
from __future__ import annotations

import dataclasses

import torch

from ..methods import Method, SegmentView, Selection
from ..models.layout import ImageLayout

# SegmentView fields with one row per token (concatenated when views are joined); the rest are shared.
TILE_SPANS = ("tiles_no_newlines",)  # ranked per vision-tower tile (vision_stage.py)
ROW_FIELDS = ("hidden", "normed", "key_norms", "cls_attention", "vision_keys")


def units(method: Method, img: ImageLayout) -> list[tuple[int, ...]]:
    """Segment indices ranked together: all of an image's grids for a joint ranking, else one grid each."""
    if len(img.segments) > 1 and method.unit() == "joint":
        return [tuple(range(len(img.segments)))]
    return [(s,) for s in range(len(img.segments))]


def split_budget(k: int, sizes: list[int]) -> list[int]:
    """k split over parts in proportion to their sizes (largest remainder; sums to k)."""
    total = sum(sizes)
    exact = [k * n / total if total else 0.0 for n in sizes]
    out = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: out[i] - exact[i])[: k - sum(out)]:
        out[i] += 1
    return out


def image_budget(method: Method, img: ImageLayout, stage: int | None = None) -> int:
    """Tokens an image keeps (after `stage` for a staged method): its convention's count on the whole image."""
    k = method.budget(img.count)
    return k if stage is None else min(img.count, method.stage_budget(stage, img.count, k))


def segment_budgets(k: int, img: ImageLayout) -> list[int]:
    """Split an image's budget over its segments in proportion to their sizes (the per-grid ranking's split)."""
    return split_budget(k, [seg.count for seg in img.segments])


def unit_budgets(k: int, img: ImageLayout, unit_list: list[tuple[int, ...]]) -> list[int]:
    """The image's budget k split over its ranking units by their token counts."""
    return split_budget(k, [sum(img.segments[s].count for s in unit) for unit in unit_list])


def join_views(views: list[SegmentView]) -> SegmentView:
    """One view over several segments' rows (in segment order). Per-row fields are concatenated, `index`
    becomes the row's image index only where every part has one; the grid is a single row (1, n)."""
    first = views[0]
    fields = {}
    for f in dataclasses.fields(SegmentView):
        parts = [getattr(v, f.name) for v in views]
        if f.name in ROW_FIELDS and parts[0] is not None:
            fields[f.name] = torch.cat(parts)
        elif f.name == "text_attention" and parts[0] is not None:
            fields[f.name] = torch.cat(parts, dim=1)  # (T, n)
        elif f.name == "attention":
            fields[f.name] = {q: torch.cat([p[q] for p in parts]) for q in parts[0]}
        else:
            fields[f.name] = getattr(first, f.name)
    fields["grid"] = (1, sum(v.n for v in views))
    fields["index"] = None
    return SegmentView(**fields)


def split_selection(sel: Selection, sizes: list[int]) -> list[Selection]:
    """A joined view's selection as one selection per part (unit rows -> segment rows). A merged group must
    lie inside one part."""
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + n)
    owner = None
    if sel.merge is not None:
        owner = []
        for row in sel.merge:
            cols = torch.nonzero(row).flatten()
            part = int(torch.searchsorted(torch.tensor(bounds[1:]), cols.min(), right=True))
            if int(cols.max()) >= bounds[part + 1]:
                raise ValueError("a merged group spans two grids; rank this method per grid")
            owner.append(part)
    out = []
    for p, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        kept = sel.kept[(sel.kept >= lo) & (sel.kept < hi)] - lo
        rows = [g for g, o in enumerate(owner or []) if o == p]
        merge = sel.merge[rows, lo:hi] if rows else None
        merged = sel.merged[rows] if rows and sel.merged is not None else None
        out.append(Selection(kept=kept, scores=None if sel.scores is None else sel.scores[lo:hi],
                             merge=merge, merged=merged, parts={k: v[lo:hi] for k, v in sel.parts.items()}))
    return out


def select_joined(select, views: list[SegmentView], unit_list: list[tuple[int, ...]],
                  budgets: list[int]) -> list[tuple[SegmentView, Selection]]:
    """Per ranking unit: the view it was ranked on (its segments joined where it has several; rows = unit rows)
    and `select(view, k)` on it. A merged group may take rows of several segments of its unit."""
    out = []
    for unit, k in zip(unit_list, budgets):
        view = views[unit[0]] if len(unit) == 1 else join_views([views[s] for s in unit])
        out.append((view, select(view, k) if k else Selection(kept=torch.zeros(0, dtype=torch.long))))
    return out


def select_units(select, views: list[SegmentView], unit_list: list[tuple[int, ...]],
                 budgets: list[int]) -> list[Selection]:
    """One selection per segment: `select(view, k)` on each unit (segments joined where a unit has several), split
    back per segment (a merged group across segments is refused: see split_selection)."""
    out: list[Selection | None] = [None] * len(views)
    for unit, (_, sel) in zip(unit_list, select_joined(select, views, unit_list, budgets)):
        parts = [sel] if len(unit) == 1 else split_selection(sel, [views[s].n for s in unit])
        for s, part in zip(unit, parts):
            out[s] = part
    return out


def tile_quotas(total: int, sizes: list[int]) -> list[int]:
    """`total` tokens over tiles evenly (differing by at most one), each capped at its size; what a capped tile
    cannot take goes to the others, so the sum is min(total, sum(sizes))."""
    quota = split_budget(total, [1] * len(sizes))
    quota = [min(q, n) for q, n in zip(quota, sizes)]
    while sum(quota) < min(total, sum(sizes)):
        open_ = [i for i, n in enumerate(sizes) if quota[i] < n]
        extra = split_budget(min(total, sum(sizes)) - sum(quota), [1] * len(open_))
        for i, e in zip(open_, extra):
            quota[i] = min(sizes[i], quota[i] + e)
    return quota


def select_tiles(method: Method, stage: int, img: ImageLayout, views: list[SegmentView], tiles: list[torch.Tensor],
                 cls_features: torch.Tensor | None = None) -> list[Selection]:
    """The authors' rule on LLaVA-NeXT for a method ranked per vision-tower tile (base image and each high-res
    crop): an even share of the image's budget per tile, ranked inside the tile. `views`: per segment, rows with
    `index` = their segment indices; `tiles`: per segment (n,) each token's tile (its vision-tower batch row), -1
    for a newline token; `cls_features`: (tiles, Dv) each tile's own [CLS] row, handed to its view. Newline tokens
    are dropped (FasterVLM, VisionZip, VisPruner, CDPruner: their code never inserts them), and a tile whose share
    exceeds its patches passes the rest on. Returns per segment a selection in
    segment index (a merged group stays inside its tile)."""
    members = {}  # tile -> (segment, view rows)
    for s, (view, tile) in enumerate(zip(views, tiles)):
        of_row = tile[view.index]  # (m,) tile of each view row
        for t in torch.unique(of_row[of_row >= 0]).tolist():
            members[t] = (s, torch.nonzero(of_row == t).flatten())
    order = sorted(members)
    quotas = tile_quotas(image_budget(method, img, stage), [members[t][1].numel() for t in order])
    picked = [[] for _ in img.segments]  # per segment: kept segment indices
    scores = [torch.zeros(seg.count) for seg in img.segments]
    merges, merged = [[] for _ in img.segments], [[] for _ in img.segments]  # per segment: (g, n), (g, D)
    for t, quota in zip(order, quotas):
        s, rows = members[t]
        tile = take_rows(views[s], rows)
        if cls_features is not None:
            tile = dataclasses.replace(tile, cls_feature=cls_features[t])
        sel = method.select_stage(stage, tile, quota)
        index = tile.index  # (m,) segment index of the tile's rows
        picked[s] += index[sel.kept].tolist()
        if sel.scores is not None:
            scores[s][index] = sel.scores.float().cpu()
        if sel.merge is not None and sel.merge.shape[0]:
            weights = sel.merge.new_zeros(sel.merge.shape[0], img.segments[s].count)  # (g, n) segment index
            weights[:, index] = sel.merge
            merges[s].append(weights)
            merged[s].append(sel.merged if sel.merged is not None else sel.merge.to(tile.hidden) @ tile.hidden)
    return [Selection(kept=torch.tensor(sorted(picked[s]), dtype=torch.long), scores=scores[s],
                      merge=torch.cat(merges[s]) if merges[s] else None,
                      merged=torch.cat(merged[s]) if merged[s] else None) for s in range(len(img.segments))]


def take_rows(view: SegmentView, rows: torch.Tensor) -> SegmentView:
    """The view restricted to some of its rows (a vision tile's tokens); `index` follows the rows."""
    fields = {f: getattr(view, f)[rows] for f in ROW_FIELDS if getattr(view, f) is not None}
    index = view.index[rows] if view.index is not None else rows
    return dataclasses.replace(view, **fields, index=index, grid=(1, int(rows.numel())))
