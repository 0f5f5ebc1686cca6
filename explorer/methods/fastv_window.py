"""Window FastV (paper Algorithm 3): FastV's scores, but an even quota of kept tokens per spatial window.

The grid is cut into `windows` x `windows` windows; each keeps floor(k / W) tokens by attention, and the
remainder goes one each to the windows with the highest mean attention (the algorithm's local score), so
kept tokens spread over the whole image instead of piling up where attention is biased.
"""
from dataclasses import dataclass

import torch

from .base import Method, Selection, SegmentView
from .knobs import knob
from .scoring import top_k_sorted, window_grid


@dataclass(frozen=True)
class FastVWindow(Method, name="fastv_window", label="Window FastV (even quota per window)"):
    """As the paper (Algorithm 3): FastV's score, top-k inside each spatial window with even quotas. Here: quotas
    differ by at most one when k does not divide evenly, so exactly k survive."""

    queries = ("last",)
    windows: int = knob(4, "windows per grid side; each of the windows² windows keeps an even share", range=(1, 64))

    def select(self, view: SegmentView, k: int) -> Selection:
        scores = view.attention["last"]  # (n,)
        h, w = view.grid
        wins = window_grid(view.grid, (min(self.windows, h), min(self.windows, w)))
        quota = quotas(k, [int(x.numel()) for x in wins], [float(scores[x].mean()) for x in wins])
        kept = [x[top_k_sorted(scores[x], q)] for x, q in zip(wins, quota) if q > 0]
        return Selection(kept=torch.sort(torch.cat(kept)).values, scores=scores)


def quotas(k: int, sizes: list[int], means: list[float]) -> list[int]:
    """Even split of k over windows, capped by window size; leftovers go to the highest-mean windows."""
    quota = [0] * len(sizes)
    rank = sorted(range(len(sizes)), key=lambda i: -means[i])
    left = k
    while left > 0:
        open_ = [i for i in rank if quota[i] < sizes[i]]
        share = left // len(open_)
        for i in open_:
            quota[i] += min(share, sizes[i] - quota[i])
        left = k - sum(quota)
        if share == 0:  # fewer left than open windows: one each, best windows first
            for i in open_[:left]:
                quota[i] += 1
            left = 0
    return quota
