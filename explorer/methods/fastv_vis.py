"""FastV_VIS: FastV's rule with the *last visual token* of each image as the query (no language guidance)."""
from dataclasses import dataclass

from .base import Method, Selection, SegmentView
from .scoring import top_k_sorted


@dataclass(frozen=True)
class FastVVis(Method):
    name = "fastv_vis"
    label = "FastV_VIS (last visual token)"
    note = ('As the paper: FastV with the last visual token as the query (no language). Here: the query is the '
            "image span's last token; on LLaVA-NeXT that token is a newline token, not a patch.")
    queries = ("last_visual",)

    def select(self, view: SegmentView, k: int) -> Selection:
        scores = view.attention["last_visual"]  # (n,)
        return Selection(kept=top_k_sorted(scores, k), scores=scores)
