"""FastV (paper Algorithm 1): keep the image tokens the last token attends to most at layer K-1.

`query="last"` is the paper's definition (last token's row, heads averaged); `query="all"` is the
labelled variant that averages the rows of every query token.
"""
from dataclasses import dataclass

from .base import SegmentView
from .knobs import knob
from .scored import ScoredMethod

QUERIES = ("last", "all")


@dataclass(frozen=True)
class FastV(ScoredMethod, name="fastv", label="FastV (last-token attention)", span="joint"):
    """As the authors: attention of the last token at layer K−1, heads averaged, the top share of image tokens kept
    from layer K on (their knob is a ratio at K = 2). Here: the same score, recomputed for the chosen query rows
    in a pre-hook (the model stays on SDPA), top-k by tokens or ratio; the "mean over all queries" variant is
    labelled. LLaVA-NeXT: one top-k over the whole image span (base + high-res grids, newline tokens candidates
    like any token), as their code ranks one token range."""

    query: str = knob("last", "last: the last token's attention (Algorithm 1); all: the mean over all query rows",
                      choices=QUERIES)

    def needs(self) -> tuple[str, ...]:
        return (self.query,)

    def score(self, view: SegmentView):
        return view.attention[self.query]  # (n,)
