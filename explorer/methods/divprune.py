"""DivPrune (Alvar et al., CVPR 2025): keep a maximally diverse subset of each image's tokens, before the LLM.

On the projector's output (the LM's input embeddings of the image tokens), with cosine distance
d(i, j) = 1 - cos(x_i, x_j): the first token is the one whose nearest neighbour is farthest; then greedily
the token whose distance to the kept set (its nearest kept token) is largest (max-min diversity), until k
tokens are kept. No attention, no text: the choice does not depend on the question.

Cut before the LLM: positions are renumbered contiguously on LLaVA (as the original removes the features);
Qwen2-VL keeps its 3-D M-RoPE positions. LLaVA-NeXT: one selection over the whole image span (base + high-res
grids), newline tokens candidates like any other token, as the authors' code (it slices the packed image features).
"""
from dataclasses import dataclass

import torch

from .base import Selection, SegmentView
from .staged import PreLLMMethod


@dataclass(frozen=True)
class DivPrune(PreLLMMethod, name="divprune", label="DivPrune (max-min diversity)", span="joint"):
    """As the authors: greedy max–min diversity on cosine distance between projected visual tokens, before the LLM.
    Here: the same greedy selection on the projector's output, exactly k tokens, positions renumbered
    contiguously; on LLaVA-NeXT one selection over the whole image span (newline tokens candidates), as their
    code."""

    where = "before the LLM: on the projector's output, cut at the LM's input"

    def select(self, view: SegmentView, k: int) -> Selection:
        order, spread = max_min_diverse(view.hidden, k)
        return Selection(kept=torch.sort(order).values, scores=spread)


def max_min_diverse(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy max-min selection on cosine distance. Returns (indices in pick order, each token's distance to
    its nearest other token, a heat map of how isolated it is)."""
    unit = torch.nn.functional.normalize(x.float(), dim=-1)
    dist = 1.0 - unit @ unit.T  # (n, n)
    n = dist.shape[0]
    isolation = dist.masked_fill(torch.eye(n, dtype=torch.bool), float("inf")).min(1).values if n > 1 \
        else torch.zeros(1)
    picks = [int(torch.argmax(isolation))]
    to_kept = dist[picks[0]].clone()  # (n,) distance of every token to its nearest kept token
    for _ in range(1, min(k, n)):
        to_kept[picks] = -float("inf")
        nxt = int(torch.argmax(to_kept))
        picks.append(nxt)
        to_kept = torch.minimum(to_kept, dist[nxt])
    return torch.tensor(picks, dtype=torch.long), isolation
