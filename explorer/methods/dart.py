"""DART (Wen et al. 2025, "Stop looking for important tokens ... duplication matters more"), K-1 -> K.

Pivots: the `pivot_image` image tokens and the `pivot_text` text tokens (after the image) with the largest
L1 norm of their keys at layer K-1 (RoPE applied, all KV heads). Each pivot in turn (image pivots, then text
pivots, by position) keeps the remaining image tokens least cosine-similar to it; similarity is taken on
the hidden states entering layer K after the LM's final norm, as in the authors' code. Needs no attention
weights, so it works with SDPA / flash attention unchanged.

Budget (`convention`): the authors' code gives each of the P = pivot_image + pivot_text pivots floor(B / P)
picks on top of the image pivots, so "paper" keeps pivot_image + P * floor(B / P) tokens (68 at B = 64, 132 at
128; ZichenWen1/DART, llava/model/language_model/modeling_llama_self.py, TOKEN_TOPK). "final" keeps exactly B:
B - pivot_image picks, the remainder one each to the first pivots.

LLaVA-NeXT: the authors' code takes the whole image span (base + high-res grids, newline tokens included) as
one image-token range, so pivots and picks are chosen over all of it: 68 at B = 64 ("paper"), 64 ("final").
With ranking="per_grid" the same image budget is split over the grids by size.
"""
from dataclasses import dataclass

import torch

from .base import MethodError, Selection, SegmentView
from .knobs import knob
from .scoring import top_k_sorted
from .staged import Stage, StagedMethod, probed


@dataclass(frozen=True)
class Dart(StagedMethod, name="dart", label="DART (duplication to key-norm pivots)", span="joint"):
    """As the authors (ZichenWen1/DART): at K = 2, 4 image + 4 text pivots by key L1 norm; each pivot keeps the
    floor(B / 8) image tokens least cosine-similar to it, so B = 64 keeps 4 + 64 = 68. Here: 'paper' keeps that
    count, 'final' exactly B (the remainder one each to the first pivots); similarity on the final-norm hidden
    states as their code; on LLaVA-NeXT one selection over the whole image span (newline tokens candidates), as
    their code, so the counts are the same (68 at 64)."""

    where = "inside the LLM: scored at layer K-1 (keys), cut at the input of layer K"
    pivot_image: int = knob(4, "pivots among the image tokens (largest key L1 norm)", range=(0, 64))
    pivot_text: int = knob(4, "pivots among the text after the image; pivots in all >= 1", range=(0, 64))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pivot_image + self.pivot_text < 1:
            raise MethodError("dart needs at least one pivot (pivot_image + pivot_text >= 1)")
        if self.layer < 1:
            raise MethodError("dart reads keys at layer K-1, so K must be >= 1")

    def stages(self, n_layers):
        return [Stage(self.layer, ("normed", "keys", "text_hidden"))]

    def stage_budget(self, stage: int, n: int, k: int) -> int:
        """"paper": image pivots + floor(k / P) picks for each of the P pivots (at most n); "final": k."""
        if self.convention == "final":
            return k
        pivots = self.pivot_image + self.pivot_text
        return min(n, min(self.pivot_image, k) + pivots * (k // pivots))

    def select(self, view: SegmentView, k: int) -> Selection:
        normed, text_hidden = probed(view, "normed"), probed(view, "text_hidden")
        key_norms, text_key_norms = probed(view, "key_norms"), probed(view, "text_key_norms")
        image_pivots = top_k_sorted(key_norms, min(self.pivot_image, k)).tolist()
        text_pivots = top_k_sorted(text_key_norms, min(self.pivot_text, text_key_norms.numel())).tolist()
        pivots = [normed[i] for i in image_pivots] + [text_hidden[t] for t in text_pivots]
        quotas = split_quota(k - len(image_pivots), len(pivots))
        chosen = list(image_pivots)
        candidates = torch.tensor([i for i in range(view.n) if i not in set(image_pivots)], dtype=torch.long)
        for pivot, quota in zip(pivots, quotas):
            if quota == 0 or candidates.numel() == 0:
                continue
            sim = torch.nn.functional.cosine_similarity(normed[candidates], pivot[None], dim=-1)
            pick = top_k_sorted(-sim, quota)  # least similar to this pivot
            chosen += candidates[pick].tolist()
            candidates = candidates[~torch.isin(torch.arange(candidates.numel()), pick)]
        redundancy = torch.stack([torch.nn.functional.cosine_similarity(normed, p[None], dim=-1)
                                  for p in pivots]).max(0).values  # (n,) closest pivot's similarity
        return Selection(kept=torch.tensor(sorted(chosen), dtype=torch.long), scores=-redundancy,
                         parts={"key_norm": key_norms.float()})


def split_quota(total: int, parts: int) -> list[int]:
    """total picks over `parts` pivots: floor each, the remainder one each to the first ones."""
    if parts == 0:
        return []
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
