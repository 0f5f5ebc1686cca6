"""VisPruner (Zhang et al., ICCV 2025, "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token
Pruning in VLMs"), checked against github.com/Theia-4869/VisPruner (llava/model/llava_arch.py `encode_images`,
llava/model/multimodal_encoder/clip_encoder.py). In the vision tower, before the LLM.

Important tokens: the int(k · `important`) patches with the highest [CLS] attention, heads averaged, at the
layer whose output feeds the projector (clip_encoder.py takes attentions[select_layer], the same layer as
FasterVLM's). Diverse tokens: the rest, ordered by [CLS] attention, lose near-duplicates in rounds until
k − important remain: each round splits them alternately into A (even places) and B (odd places), scores each
A token by its highest cosine to any B token (vision features before the projector, as llava_arch.py), and
drops the min(8, surplus) highest-scoring A tokens; the survivors of A (most similar first) followed by B
are the next round's order (llava_arch.py's bookkeeping, kept because it decides who meets whom).

As the authors / here:
- Same rule, same features, exactly `keep` tokens (the same under the `paper` and `final` conventions).
- `important` defaults to 0.5 (the README's 128-token example; its 64-token example uses 0.75). Ties in
  sorting are broken by index (stable), the authors' sort is unstable; an odd number of remaining tokens is
  handled here (A one longer than B), and a round whose surplus exceeds A drops all of A; the authors'
  indexing expects an even count and a surplus within A.
- LLaVA-NeXT, as the authors' code (llava_arch.py): `encode_images` prunes each CLIP tile of the batch (base
  image and every high-res crop; T tokens per tile, by that tile's own [CLS] row), and
  `prepare_inputs_labels_for_multimodal` strips "_unpad" from mm_patch_merge_type first, so its unpad branch never
  runs: no newline token is inserted and nothing is unpadded (padding patches are candidates). Here
  (ranking="authors"): the image's budget shared evenly over its tiles, each pruned as above with its own [CLS]
  attention, newline tokens dropped; only patches that survive HF's unpadding are candidates (a tile with fewer
  than its share passes the rest on, so the image keeps `keep` as theirs does). ranking="per_grid": each grid on
  its own with the size split.
- Towers without [CLS] (Qwen2-VL): not applicable.
"""
from dataclasses import dataclass

import torch

from .base import Selection, SegmentView
from .knobs import knob
from .staged import PreLLMMethod, probed

ROUND = 8  # llava_arch.py: at most 8 near-duplicates dropped per round


@dataclass(frozen=True)
class VisPruner(PreLLMMethod, name="vispruner", label="VisPruner ([CLS]-important + diverse, vision tower)",
                span="tiles_no_newlines"):
    """As the authors: int(k·important) top-[CLS]-attention patches, then near-duplicates removed from the rest in
    rounds of ≤ 8 (even/odd matching on vision features) until k remain. Here: the same; LLaVA-NeXT as their code, per
    vision tile (base + each crop, its own [CLS] row) with an even share, newline tokens dropped; important = 0.5
    by default."""

    requires = ("cls",)
    probes, scored_on = ("cls",), "projector"
    where = ("vision tower: [CLS] attention at the projector's input layer picks important tokens, "
             "near-duplicates removed from the rest; cut before the LLM")
    important: float = knob(0.5, "share of the budget kept by [CLS] importance, the rest for diversity",
                            range=(0.0, 1.0))

    def select(self, view: SegmentView, k: int) -> Selection:
        cls = probed(view, "cls_attention").float()  # (n,)
        k = min(k, view.n)
        n_important = int(k * self.important)  # llava_arch.py: int(T * r)
        order = torch.argsort(cls, descending=True, stable=True)  # (n,) most attended first
        diverse = drop_duplicates(view.hidden, order[n_important:], k - n_important)
        kept = torch.cat([order[:n_important], diverse])
        return Selection(kept=torch.sort(kept).values, scores=cls)


def drop_duplicates(x: torch.Tensor, residual: torch.Tensor, keep: int) -> torch.Tensor:
    """VisPruner's rounds over `residual` (indices into x (n, D), in [CLS] order) until `keep` remain."""
    if keep <= 0:
        return residual[:0]
    unit = torch.nn.functional.normalize(x[residual].float(), dim=-1)
    cosine = unit @ unit.T  # (R, R) once, not per round (same values); rounds work on places in `residual`
    places = torch.arange(residual.numel(), device=residual.device)
    while (r := min(ROUND, places.numel() - keep)) > 0:
        a, b = places[0::2], places[1::2]
        closest = cosine.index_select(0, a).index_select(1, b).amax(1)  # (|A|,) each A place's highest cosine to B
        survivors = torch.argsort(closest, descending=True, stable=True)[r:]
        places = torch.cat([a[survivors], b])
    return residual[places]
