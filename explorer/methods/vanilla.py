"""Vanilla: no pruning. The reference every other method is compared with."""
from dataclasses import dataclass

import torch

from .base import Method, Selection, SegmentView


@dataclass(frozen=True)
class Vanilla(Method):
    name = "vanilla"
    label = "Vanilla (no pruning)"
    prunes = False

    def select(self, view: SegmentView, k: int) -> Selection:
        return Selection(kept=torch.arange(view.n))
