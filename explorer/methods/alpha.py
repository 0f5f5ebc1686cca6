"""The alpha blend (paper Eq. 6): alpha * importance + (1 - alpha) * uniqueness, both min-max normalised.

Importance is FastV's last-token attention at layer K-1; uniqueness is 1 - cos(token, last token) on the
hidden states entering layer K. alpha=1 is FastV, alpha=0 keeps the tokens least like the last token.
The two parts are returned so a UI can re-blend for another alpha without running the model.
"""
from dataclasses import dataclass, field

import torch

from .base import Method, MethodError, Selection, SegmentView
from .scoring import cosine_to, minmax, top_k_sorted


@dataclass(frozen=True)
class AlphaBlend(Method):
    name = "alpha"
    span = "joint"
    label = "α blend (importance + uniqueness)"
    note = ('As the paper (Eq. 6): α·minmax(attention) + (1−α)·minmax(1 − cos(token, last token)); α = 1 is '
            'FastV. Here: exactly that; both parts are kept with the result so the α slider re-selects without '
            'running the model. LLaVA-NeXT: one ranking over the whole image span, as FastV.')
    queries = ("last",)
    alpha: float = field(default=0.5, metadata={"help": "1 = attention only (FastV), 0 = uniqueness only",
                                                "range": (0.0, 1.0)})

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise MethodError(f"alpha must be in [0, 1], got {self.alpha!r}")
        super().__post_init__()

    def select(self, view: SegmentView, k: int) -> Selection:
        importance = view.attention["last"].float()  # (n,)
        uniqueness = 1.0 - cosine_to(view.hidden, view.last_hidden)  # (n,)
        scores = blend(importance, uniqueness, self.alpha)
        return Selection(kept=top_k_sorted(scores, k), scores=scores,
                         parts={"importance": importance, "uniqueness": uniqueness})

    def from_scores(self, scores, parts, k):
        """Re-blends the two reported parts at this α (the slider) and keeps the top k."""
        if "importance" not in parts or "uniqueness" not in parts:
            return None
        blended = blend(parts["importance"], parts["uniqueness"], self.alpha)
        return Selection(kept=top_k_sorted(blended, k), scores=blended, parts=parts)


def blend(importance: torch.Tensor, uniqueness: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 6 on min-max normalised parts; pure, so the UI can re-select at a new alpha."""
    return alpha * minmax(importance) + (1.0 - alpha) * minmax(uniqueness)
