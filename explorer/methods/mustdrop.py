"""MustDrop (Liu et al. 2024, multi-stage vision token dropping): vision merge + LLM filter + KV cache cut.

1. Vision (before the projector, at the layer LLaVA feeds it): every 3x3 window of the grid whose tokens are
   all cosine-similar (>= `similarity`, on the vision features) is merged into its mean, most similar
   windows first, never below the final budget. The group's token sits at its first position.
2. LLM, K-1 -> K: dual attention. A token is dropped only when both the "global" view (the last token's
   attention) and the "individual" view (text tokens' attention, averaged) rate it low: score = max of the
   two min-max normalised attentions; the top k survive (merged tokens compete like any other).
3. Decode: after prefill, every layer's KV cache (also the layers before K) keeps only the final survivors,
   so decoding attends to k image tokens everywhere.

Approximations, stated: the merge runs on the projector's input layer, not an earlier tower layer; the
dual filter ranks (top-k) instead of the paper's two thresholds, so `keep` is exact. Positions stay the
original ones (no renumbering). [CLS] is not used, but the merge needs LLaVA's CLIP features, so Qwen2-VL
is refused.
"""
from dataclasses import dataclass

import torch

from .base import MethodError, Selection, SegmentView
from .scoring import minmax, top_k_sorted, window_grid
from .staged import Stage, StagedMethod, probed


@dataclass(frozen=True)
class MustDrop(StagedMethod):
    name = "mustdrop"
    label = "MustDrop (vision merge + dual attention + KV cut)"
    cut_cache = True
    where = ("vision merge before the projector; dual-attention cut at the input of layer K; "
             "KV cache of every layer cut to the final survivors after prefill")
    similarity: float = 0.9
    window: int = 3

    def __post_init__(self) -> None:
        if not -1 <= self.similarity <= 1 or self.window < 2:
            raise MethodError("similarity must be in [-1, 1] and window >= 2")
        super().__post_init__()
        if self.layer < 1:
            raise MethodError("mustdrop reads attention at layer K-1, so K must be >= 1")

    def stages(self, n_layers):
        return [Stage(0, ("cls",), at="projector"), Stage(self.layer, ("text_attention",))]

    def select_stage(self, stage: int, view: SegmentView, k: int) -> Selection:
        return self.merge_windows(view, k) if stage == 0 else self.select(view, k)

    def select(self, view: SegmentView, k: int) -> Selection:
        rows = probed(view, "text_attention").float()  # (T, n); the last row is the last token's
        score = torch.maximum(minmax(rows[-1]), minmax(rows.mean(0)))
        return Selection(kept=top_k_sorted(score, k), scores=score)

    def merge_windows(self, view: SegmentView, k: int) -> Selection:
        h, w = view.grid
        position = {int(i): r for r, i in enumerate(view.index.tolist())} if view.index is not None else None
        unit = torch.nn.functional.normalize(view.hidden.float(), dim=-1)
        candidates = []
        for win in window_grid((h, w), (max(1, h // self.window), max(1, w // self.window))):
            rows = [position.get(int(i)) if position else int(i) for i in win]
            if len(rows) < 2 or any(r is None for r in rows):
                continue  # a window over a LLaVA-NeXT newline column is left alone
            sim = (unit[rows] @ unit[rows].T).min()
            if sim >= self.similarity:
                candidates.append((float(sim), rows))
        merged, left = [], view.n
        for _, rows in sorted(candidates, key=lambda c: -c[0]):
            if left - (len(rows) - 1) < k:
                break
            merged.append(rows)
            left -= len(rows) - 1
        taken = {r for rows in merged for r in rows}
        kept = torch.tensor([r for r in range(view.n) if r not in taken], dtype=torch.long)
        merge = torch.zeros(len(merged), view.n) if merged else None
        for g, rows in enumerate(merged):
            merge[g, rows] = 1.0 / len(rows)
        return Selection(kept=kept, merge=merge)
