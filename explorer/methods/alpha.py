"""The alpha blend (paper Eq. 6): alpha * importance + (1 - alpha) * uniqueness, both min-max normalised.

Importance is FastV's last-token attention at layer K-1; uniqueness is 1 - cos(token, last token) on the
hidden states entering layer K. alpha=1 is FastV, alpha=0 keeps the tokens least like the last token.
The two parts are returned so a UI can re-blend for another alpha without running the model.
"""
from dataclasses import dataclass

import torch

from .base import SegmentView
from .knobs import knob
from .scored import ScoredMethod
from .scoring import cosine_to, minmax


@dataclass(frozen=True)
class AlphaBlend(ScoredMethod, name="alpha", label="α blend (importance + uniqueness)", span="joint"):
    """As the paper (Eq. 6): α·minmax(attention) + (1−α)·minmax(1 − cos(token, last token)); α = 1 is FastV. Here:
    exactly that; both parts are kept with the result so the α slider re-selects without running the model.
    LLaVA-NeXT: one ranking over the whole image span, as FastV."""

    queries = ("last",)
    part_names = ("importance", "uniqueness")  # reported, so the α slider re-blends them without a run
    alpha: float = knob(0.5, "1 = attention only (FastV), 0 = uniqueness only", range=(0.0, 1.0))

    def parts(self, view: SegmentView) -> dict[str, torch.Tensor]:
        return {"importance": view.attention["last"].float(),  # (n,)
                "uniqueness": 1.0 - cosine_to(view.hidden, view.last_hidden)}  # (n,)

    def combine(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        return blend(parts["importance"], parts["uniqueness"], self.alpha)


def blend(importance: torch.Tensor, uniqueness: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 6 on min-max normalised parts; pure, so the UI can re-select at a new alpha."""
    return alpha * minmax(importance) + (1.0 - alpha) * minmax(uniqueness)
