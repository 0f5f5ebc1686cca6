"""Vanilla: no pruning. The reference every other method is compared with."""
from dataclasses import dataclass

import torch

from .base import Method, Selection, SegmentView


@dataclass(frozen=True)
class Vanilla(Method, name="vanilla", label="Vanilla (no pruning)"):
    """As the authors: the stock model, every image token kept. Here: the same run through the same decode loop; its
    logits equal stock transformers bit for bit, and every other panel's costs are measured against it."""

    prunes = False

    def select(self, view: SegmentView, k: int) -> Selection:
        return Selection(kept=torch.arange(view.n))
