"""Reverse FastV (paper Algorithm 2): the same last-token attention, keeping the k *lowest*."""
from dataclasses import dataclass

from .base import Method, Selection, SegmentView
from .scoring import top_k_sorted


@dataclass(frozen=True)
class FastVReverse(Method):
    name = "fastv_reverse"
    span = "joint"
    label = "Reverse FastV (least attended)"
    note = ("As the paper (Algorithm 2): FastV's score, the k lowest kept. Here: exactly that, same probe as "
            'FastV; on LLaVA-NeXT the k lowest over the whole image span, as FastV.')
    queries = ("last",)

    def select(self, view: SegmentView, k: int) -> Selection:
        scores = view.attention["last"]  # (n,)
        return Selection(kept=top_k_sorted(scores, k, largest=False), scores=-scores)

    def from_scores(self, scores, parts, k):
        """Its reported scores are the negated attention: the k lowest attention = the k highest scores."""
        return None if scores is None else Selection(kept=top_k_sorted(scores, k), scores=scores)
