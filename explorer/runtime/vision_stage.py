"""Cuts scored before the projector (a stage `at="projector"`): the method ranks vision features with the tower's
[CLS] scores; merged tokens are formed in vision space and written back into the projector's input, so the
stock projector and the family's packing produce their LM rows. The runtime's cut at the LM's input (layer 0)
then applies the selection (pending[stage], per image and segment).
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..methods import SegmentView, Selection
from ..methods.base import MethodError
from .cut import merged_vectors
from .plan import select_stage
from .spans import TILE_SPANS, image_budget, take_rows, tile_quotas


class ProjectorStage:
    def __init__(self, runtime, stage: int):
        self.rt, self.stage = runtime, stage

    @torch.no_grad()
    def on_projector(self, args):
        rt = self.rt
        if self.stage in rt.pending:
            return None
        started = time.perf_counter()
        feats = args[0]  # (B, P, Dv) vision features, [CLS] already dropped
        flat = feats.reshape(-1, feats.shape[-1]).clone()  # (B * P, Dv) vision row
        chosen = []
        for img, segs in zip(rt.layouts, rt.vision_index):
            views = [self._view(img, s, seg, vidx, flat, feats.shape[1])
                     for s, (seg, vidx) in enumerate(zip(img.segments, segs))]
            if rt.method.unit() in TILE_SPANS and len(img.segments) > 1:
                views, sels = self._select_tiles(img, views, feats.shape[1])
            else:
                sels = select_stage(rt.method, self.stage, img, views)
            for view, sel, vidx in zip(views, sels, segs):
                for vec, weights in zip(merged_vectors(sel, view.hidden), sel.merge if sel.merge is not None else []):
                    flat[first_vision_row(view, weights, vidx)] = vec
            chosen.append(list(zip(views, sels)))
        rt.pending[self.stage] = chosen
        rt.ms += (time.perf_counter() - started) * 1e3
        return (flat.view_as(feats), *args[1:])

    def _view(self, img, s, seg, vidx, flat, patches) -> SegmentView:
        """A segment's tokens that have a vision row (not NeXT's newlines), as vision features + [CLS] scores."""
        vision = self.rt.probes.vision
        rows = torch.nonzero(vidx >= 0).flatten()  # (m,) segment indices; NeXT's newline tokens have no vision row
        src = vidx[rows]  # (m,) vision rows
        return SegmentView(hidden=flat[src], grid=seg.grid, last_hidden=flat[src][-1], index=rows,
                           cls_attention=vision["cls"].flatten()[src] if "cls" in vision else None,
                           vision_keys=vision["keys"].flatten(0, 1)[src] if "keys" in vision else None,
                           seed=img.index * 1000 + s,
                           cls_feature=(vision["cls_feature"][int(src[0]) // patches]
                                        if "cls_feature" in vision else None))

    def _select_tiles(self, img, views, patches):
        """The authors' rule on LLaVA-NeXT for a method ranked per vision-tower tile (base image and each high-res
        crop): an even share of the image's budget per tile, ranked inside the tile with the tile's own [CLS] row.
        span "tiles" (FasterVLM) also keeps every newline token ("paper": the budget over the tiles, newlines on
        top; "final": the budget minus the newlines, so exactly the budget survives); "tiles_no_newlines"
        (VisionZip, VisPruner) drops them, and a tile whose share exceeds its patches passes the rest on. Returns
        per segment a view of all its tokens and the selection (segment index; merged groups stay in a tile)."""
        method, vision_index = self.rt.method, self.rt.vision_index
        tiles = {}  # tile -> (segment, view rows)
        for s, (view, vidx) in enumerate(zip(views, vision_index[img.index])):
            for t in torch.unique(vidx[view.index] // patches).tolist():
                tiles[t] = (s, torch.nonzero(vidx[view.index] // patches == t).flatten())
        keep_newlines = method.unit() == "tiles"
        newlines = sum(seg.count - view.n for seg, view in zip(img.segments, views)) if keep_newlines else 0
        k = image_budget(method, img, self.stage)
        paper = method.convention == "paper" and keep_newlines
        if not paper and k < newlines:
            raise MethodError(f"{method.name} keeps every newline token of LLaVA-NeXT's high-res grid "
                              f"({newlines} here), so 'final' needs keep >= {newlines}")
        order = sorted(tiles)
        quotas = tile_quotas(k if paper else k - newlines, [tiles[t][1].numel() for t in order], fill=not paper)
        picked = [torch.nonzero(torch.tensor(seg.is_newline())).flatten().tolist() if keep_newlines else []
                  for seg in img.segments]
        scores = [torch.zeros(seg.count) for seg in img.segments]
        merges, merged = [[] for _ in img.segments], [[] for _ in img.segments]  # per segment: (g, n), (g, Dv)
        for t, quota in zip(order, quotas):
            s, rows = tiles[t]
            tile = self._tile_view(views[s], rows, t)
            sel = method.select_stage(self.stage, tile, quota)
            index = tile.index  # (m,) segment index of the tile's rows
            picked[s] += index[sel.kept].tolist()
            if sel.scores is not None:
                scores[s][index] = sel.scores.float()
            if sel.merge is not None and sel.merge.shape[0]:
                weights = sel.merge.new_zeros(sel.merge.shape[0], img.segments[s].count)  # (g, n) segment index
                weights[:, index] = sel.merge
                merges[s].append(weights)
                merged[s].append(torch.stack(merged_vectors(sel, tile.hidden)))
        full, sels = [], []
        for s, (seg, view) in enumerate(zip(img.segments, views)):
            hidden = view.hidden.new_zeros(seg.count, view.hidden.shape[-1])  # (n, Dv) newline rows stay zero
            hidden[view.index] = view.hidden
            full.append(dataclasses.replace(view, hidden=hidden, index=torch.arange(seg.count), cls_attention=None,
                                            vision_keys=None, cls_feature=None))
            sels.append(Selection(kept=torch.tensor(sorted(picked[s]), dtype=torch.long), scores=scores[s],
                                  merge=torch.cat(merges[s]) if merges[s] else None,
                                  merged=torch.cat(merged[s]) if merged[s] else None))
        return full, sels

    def _tile_view(self, view: SegmentView, rows: torch.Tensor, tile: int) -> SegmentView:
        """A segment view's rows of one vision tile, with that tile's own [CLS] row (tile: its vision-tower batch
        row)."""
        part = take_rows(view, rows)
        feature = self.rt.probes.vision.get("cls_feature")
        return part if feature is None else dataclasses.replace(part, cls_feature=feature[tile])


def first_vision_row(view: SegmentView, weights: torch.Tensor, vidx: torch.Tensor) -> int:
    """The vision row of a merged group's representative (its first token in the segment)."""
    first = int(view.index[int(torch.nonzero(weights > 0).min())])
    return int(vidx[first])
