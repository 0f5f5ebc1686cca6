"""Average pooling: the true pooling variant of Algorithm 4. Each of the k windows becomes one merged token,
the mean of its tokens, placed at the window's first position."""
from dataclasses import dataclass

import torch

from .base import Method, Selection, SegmentView
from .scoring import band_windows


@dataclass(frozen=True)
class AvgPool(Method, name="avgpool", label="Pooling (average per window)"):
    """As the paper (its pooling variant): each a×a window is averaged into one token. Here: the same windows as
    max-norm pooling; the mean sits at its window's first cell and is drawn as one merged group."""

    def select(self, view: SegmentView, k: int) -> Selection:
        windows = band_windows(view.grid, k)
        merge = torch.zeros(len(windows), view.n)  # (k, n) one row of weights per merged token
        for row, win in enumerate(windows):
            merge[row, win] = 1.0 / win.numel()
        return Selection(kept=torch.zeros(0, dtype=torch.long), merge=merge)
