"""The scored tier (kvpress's ScorerPress): a method that only says what each token is worth; this base keeps the
k best, reports the scores for the heat map, and re-selects from reported scores (a new budget without a run).

A scored method implements `score(view) -> (n,)`, higher = kept. One whose score blends named parts the UI may
re-weight (the α blend) implements `parts(view)` and `combine(parts)` instead, and lists the part names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Method, Selection, SegmentView
from .scoring import top_k_sorted


@dataclass(frozen=True)
class ScoredMethod(Method):
    part_names: ClassVar[tuple[str, ...]] = ()  # the parts `combine` needs; () = `score` is the whole rule

    def score(self, view: SegmentView) -> torch.Tensor:
        """(n,) how much each of the view's tokens is worth keeping."""
        return self.combine(self.parts(view))

    def parts(self, view: SegmentView) -> dict[str, torch.Tensor]:
        """Named score components, each (n,), reported with the selection (only where `part_names` is set)."""
        return {}

    def combine(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        """(n,) the score from its parts."""
        raise NotImplementedError

    def select(self, view: SegmentView, k: int) -> Selection:
        parts = self.parts(view) if self.part_names else {}
        scores = self.combine(parts) if parts else self.score(view)  # (n,)
        return Selection(kept=top_k_sorted(scores, k), scores=scores, parts=parts)

    def from_scores(self, scores, parts, k):
        """The top k of the reported scores, or of the parts re-combined at this configuration's knobs."""
        if self.part_names:
            if not all(name in parts for name in self.part_names):
                return None
            scores = self.combine(parts)
        if scores is None:
            return None
        return Selection(kept=top_k_sorted(scores, k), scores=scores, parts=parts if self.part_names else {})
