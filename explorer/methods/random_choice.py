"""Random: a seeded uniform choice of k image tokens at layer K (the paper's surprisingly strong baseline)."""
from dataclasses import dataclass

import torch

from .base import Method, Selection, SegmentView
from .knobs import knob


@dataclass(frozen=True)
class RandomChoice(Method, name="random", label="Random", span="joint"):
    """As the paper (its random baseline): a uniform sample of the image tokens at layer K. Here: a seeded draw per
    image (over LLaVA-NeXT's whole span, newline tokens included), the kept tokens keep their original positions;
    both budget conventions keep exactly the budget."""

    seed: int = knob(0, "the draw's seed (each image adds its own offset)", range=(0, None))

    def select(self, view: SegmentView, k: int) -> Selection:
        gen = torch.Generator().manual_seed(self.seed + view.seed)
        order = torch.randperm(view.n, generator=gen)  # (n,)
        return Selection(kept=torch.sort(order[:k]).values)
