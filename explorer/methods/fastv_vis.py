"""FastV_VIS: FastV's rule with the *last visual token* of each image as the query (no language guidance).

The query is the image's last *patch* token: LLaVA-NeXT's span ends with a newline token, which is skipped
(the runtime picks the row from the layout, `ImageLayout.last_patch`)."""
from dataclasses import dataclass

from .base import Method, Selection, SegmentView
from .scoring import top_k_sorted


@dataclass(frozen=True)
class FastVVis(Method):
    name = "fastv_vis"
    span = "joint"
    label = "FastV_VIS (last visual token)"
    note = ('As the paper: FastV with the last visual token as the query (no language). Here: the query is the '
            "image span's last patch token (LLaVA-NeXT's span ends with a newline token, which is skipped), one "
            'top-k over the whole span as FastV.')
    queries = ("last_visual",)

    def select(self, view: SegmentView, k: int) -> Selection:
        scores = view.attention["last_visual"]  # (n,)
        return Selection(kept=top_k_sorted(scores, k), scores=scores)

    def from_scores(self, scores, parts, k):
        return None if scores is None else Selection(kept=top_k_sorted(scores, k), scores=scores)
