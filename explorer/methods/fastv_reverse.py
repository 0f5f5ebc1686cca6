"""Reverse FastV (paper Algorithm 2): the same last-token attention, keeping the k *lowest*."""
from dataclasses import dataclass

from .base import SegmentView
from .scored import ScoredMethod


@dataclass(frozen=True)
class FastVReverse(ScoredMethod, name="fastv_reverse", label="Reverse FastV (least attended)", span="joint"):
    """As the paper (Algorithm 2): FastV's score, the k lowest kept. Here: exactly that, same probe as FastV; on
    LLaVA-NeXT the k lowest over the whole image span, as FastV."""

    queries = ("last",)

    def score(self, view: SegmentView):
        """The negated attention: the k highest scores are the k least attended tokens."""
        return -view.attention["last"]  # (n,)
