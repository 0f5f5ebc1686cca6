"""FastV_VIS: FastV's rule with the *last visual token* of each image as the query (no language guidance).

The query is the image's last *patch* token: LLaVA-NeXT's span ends with a newline token, which is skipped
(the runtime picks the row from the layout, `ImageLayout.last_patch`)."""
from dataclasses import dataclass

from .base import SegmentView
from .scored import ScoredMethod


@dataclass(frozen=True)
class FastVVis(ScoredMethod, name="fastv_vis", label="FastV_VIS (last visual token)", span="joint"):
    """As the paper: FastV with the last visual token as the query (no language). Here: the query is the image span's
    last patch token (LLaVA-NeXT's span ends with a newline token, which is skipped), one top-k over the whole
    span as FastV."""

    queries = ("last_visual",)

    def score(self, view: SegmentView):
        return view.attention["last_visual"]  # (n,)
