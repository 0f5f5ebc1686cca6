"""FastV (paper Algorithm 1): keep the image tokens the last token attends to most at layer K-1.

`query="last"` is the paper's definition (last token's row, heads averaged); `query="all"` is the
labelled variant that averages the rows of every query token.
"""
from dataclasses import dataclass, field

from .base import Method, MethodError, Selection, SegmentView
from .scoring import top_k_sorted

QUERIES = ("last", "all")


@dataclass(frozen=True)
class FastV(Method):
    name = "fastv"
    span = "joint"
    label = "FastV (last-token attention)"
    note = ('As the authors: attention of the last token at layer K−1, heads averaged, the top share of image '
            'tokens kept from layer K on (their knob is a ratio at K = 2). Here: the same score, recomputed for '
            'the chosen query rows in a pre-hook (the model stays on SDPA), top-k by tokens or ratio; the "mean '
            'over all queries" variant is labelled. LLaVA-NeXT: one top-k over the whole image span (base + '
            'high-res grids, newline tokens candidates like any token), as their code ranks one token range.')
    query: str = field(default="last", metadata={"help": "last: the last token's attention (Algorithm 1); all: the "
                                                         "mean over all query rows", "choices": QUERIES})

    def __post_init__(self) -> None:
        if self.query not in QUERIES:
            raise MethodError(f"query must be one of {QUERIES}, got {self.query!r}")
        super().__post_init__()

    def needs(self) -> tuple[str, ...]:
        return (self.query,)

    def select(self, view: SegmentView, k: int) -> Selection:
        scores = view.attention[self.query]  # (n,)
        return Selection(kept=top_k_sorted(scores, k), scores=scores)

    def from_scores(self, scores, parts, k):
        return None if scores is None else Selection(kept=top_k_sorted(scores, k), scores=scores)
