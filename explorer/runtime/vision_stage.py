"""Cuts scored before the projector (a stage `at="projector"`): the method ranks vision features with the tower's
[CLS] scores; merged tokens are formed in vision space and written back into the projector's input, so the
stock projector and the family's packing produce their LM rows. The runtime's cut at the LM's input (layer 0)
then applies the selection (pending[stage], per image and segment).
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..methods import SegmentView
from .cut import merged_vectors
from .plan import select_stage
from .spans import TILE_SPANS, select_tiles


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
        """Ranked per vision-tower tile (spans.select_tiles, each tile with its own [CLS] row). Returns per segment a
        view of all its tokens (newline rows zero) and the selection, both in segment index."""
        tiles = [torch.where(vidx >= 0, vidx // patches, -1) for vidx in self.rt.vision_index[img.index]]
        sels = select_tiles(self.rt.method, self.stage, img, views, tiles, self.rt.probes.vision.get("cls_feature"))
        full = []
        for seg, view in zip(img.segments, views):
            hidden = view.hidden.new_zeros(seg.count, view.hidden.shape[-1])  # (n, Dv) newline rows stay zero
            hidden[view.index] = view.hidden
            full.append(dataclasses.replace(view, hidden=hidden, index=torch.arange(seg.count), cls_attention=None,
                                            vision_keys=None, cls_feature=None))
        return full, sels


def first_vision_row(view: SegmentView, weights: torch.Tensor, vidx: torch.Tensor) -> int:
    """The vision row of a merged group's representative (its first token in the segment)."""
    first = int(view.index[int(torch.nonzero(weights > 0).min())])
    return int(vidx[first])
