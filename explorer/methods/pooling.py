"""Pooling (paper Algorithm 4): cut the token grid into k windows, keep the max-L1-norm token of each.

With k=144 of 24x24 the windows are 2x2, with k=64 they are 3x3, exactly as in the paper; other budgets
use near-equal windows so the kept count is always exactly k.
"""
from dataclasses import dataclass

import torch

from .base import Method, Selection, SegmentView
from .scoring import band_windows


@dataclass(frozen=True)
class Pooling(Method, name="pooling", label="Pooling (max-norm per window)"):
    """As the paper (Algorithm 4): a×a windows on the token grid at layer K, the token of largest L1 norm kept per
    window. Here: when the budget is not a square number the grid is cut into exactly k near-equal windows (row
    bands), so k tokens survive; at 144 or 64 on 24×24 these are the paper's 2×2 and 3×3 windows."""

    def select(self, view: SegmentView, k: int) -> Selection:
        norms = view.hidden.float().abs().sum(-1)  # (n,) L1 norm per token
        kept = [int(win[torch.argmax(norms[win])]) for win in band_windows(view.grid, k)]
        return Selection(kept=torch.sort(torch.tensor(kept, dtype=torch.long)).values, scores=norms)
