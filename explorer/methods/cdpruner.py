"""CDPruner (Zhang et al., NeurIPS 2025, "Beyond Attention or Similarity: Maximizing Conditional Diversity for
Token Pruning in MLLMs"), checked against github.com/Theia-4869/CDPruner (llava/model/llava_arch.py
`encode_images`, llava/model/multimodal_encoder/clip_encoder.py). Before the LLM.

A conditional DPP over each image's tokens: kernel L = diag(q) S diag(q), S the cosine similarity of the
projector's outputs (llava_arch.py: similarity of `mm_projector(image_features)`), q a per-token quality from
the token's relevance r to the instruction (r min-max normalised to [0, 1], as llava_arch.py does). The kept
set is the greedy MAP of the DPP: k times, add the token that most increases log det L_Y (the fast incremental
Cholesky of Chen et al. 2018, which llava_arch.py also uses).

The importance–diversity axis (the paper's Eq. 6 α). With q = exp(a r), a = θ / (2 (1 − θ)) (the authors'
θ form, a commented option in llava_arch.py with θ = 0.5), log det L_Y = (θ / (1 − θ)) Σ_Y r + log det S_Y,
i.e. θ·importance + (1 − θ)·diversity up to a positive factor. θ = 1: top-k by relevance (the importance end,
where FastV and α-blend at α = 1 sit); θ = 0: a DPP on similarity alone (the diversity end, DivPrune's and
α-blend at α = 0's side). So α-blend at α, CDPruner at θ and DivPrune at 0 sit on one axis.

As the authors / here:
- Relevance: the authors use CLIP's joint space (patch features through CLIP's post-layernorm and visual
  projection vs the CLIP text tower's embedding of the instruction) and take the *negated* mean cosine
  (llava_arch.py). llava-hf checkpoints, the embedded toy and Qwen2-VL ship no CLIP text tower, so here r is
  the mean cosine, in the LM's input-embedding space, between each image token (projector output) and the
  input embeddings of the text after the image (the question plus the chat template's reply prefix). The
  negation belongs to CLIP patch embeddings and is not carried over.
- Quality: the authors' released line uses q = r itself (`quality="linear"` here); θ (default 0.5, the
  authors' suggested value) is used unless `quality="linear"`.
- Once the kernel's rank is exhausted (duplicate tokens), the authors' loop would divide by ~0; here the
  remaining picks go by quality, which a DPP cannot tell apart otherwise.
- LLaVA-NeXT, as the authors' code (llava_arch.py): `encode_images` runs the DPP on each CLIP tile of the
  batch (base image and every high-res crop; T tokens per tile), and `prepare_inputs_labels_for_multimodal` strips
  "_unpad" from mm_patch_merge_type first, so its unpad branch never runs: no newline token is inserted and
  nothing is unpadded (padding patches are candidates). Their relevance is min-max normalised over the whole
  batch (every tile of every image) before the per-tile DPP. Here (ranking="authors"): the image's budget shared
  evenly over its tiles, a DPP per tile on the LM-input rows of that tile, newline tokens dropped; only patches
  that survive HF's unpadding are candidates (a tile with fewer than its share passes the rest on, so the image
  keeps `keep` as theirs does), and the relevance is min-max normalised within each tile (the tile's own range
  scales r, so the relevance-diversity balance can differ from theirs tile by tile). ranking="per_grid": one DPP
  per grid with the size split, newline tokens candidates; so is a family that maps no tiles (LLaVA-OneVision).
Exactly `keep` tokens per image, as the authors (the same under the `paper` and `final` conventions).
"""
from dataclasses import dataclass

import torch

from .base import Selection, SegmentView
from .knobs import knob
from .scoring import minmax, top_k_sorted
from .staged import PreLLMMethod, probed

QUALITIES = ("theta", "linear")


@dataclass(frozen=True)
class CDPruner(PreLLMMethod, name="cdpruner",
               label="CDPruner (conditional DPP; θ: 1 = relevance only … 0 = diversity only)",
               span="tiles_no_newlines"):
    """As the authors: conditional DPP (cosine kernel on projector outputs × instruction relevance), greedy MAP,
    exactly k tokens, before the LLM. Here: the same, with relevance in the LM's input-embedding space (llava-hf
    and Qwen2-VL ship no CLIP text tower; the authors use CLIP's negated cosine); θ (default 0.5, the authors'
    suggestion; `quality='linear'` is their released kernel) is the weight on relevance on the paper's α axis: θ=1
    relevance only (α=1's end), θ=0 diversity only (DivPrune's end). LLaVA-NeXT as their code: one DPP per vision
    tile (base + each crop) with an even share, newline tokens dropped (relevance normalised per tile here)."""

    probes = ("text_embeds",)
    where = ("before the LLM: a DPP over the projector's output, its quality set by relevance to the "
             "instruction's input embeddings")
    theta: float = knob(0.5, "relevance vs diversity: 1 = relevance only, 0 = diversity only", range=(0.0, 1.0))
    quality: str = knob("theta", "theta: relevance weighted by theta; linear: the authors' released kernel "
                                 "(quality = relevance)", choices=QUALITIES)

    def select(self, view: SegmentView, k: int) -> Selection:
        relevance = instruction_relevance(view.hidden, probed(view, "text_embeds"))  # (n,) in [0, 1]
        if self.quality == "theta" and self.theta == 1.0:  # the limit a -> inf: importance only
            return Selection(kept=top_k_sorted(relevance, k), scores=relevance, parts={"relevance": relevance})
        linear = relevance + 1e-6  # llava_arch.py's released quality: r itself, +1e-6 so no token gets 0
        quality = linear if self.quality == "linear" else tilted(relevance, self.theta)
        kernel = conditional_kernel(view.hidden, quality)
        order = dpp_greedy(kernel, k)
        return Selection(kept=torch.sort(order).values, scores=relevance, parts={"relevance": relevance})


def instruction_relevance(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Mean cosine of each image token (n, D) to the text tokens (T, D), min-max normalised -> (n,)."""
    unit_i = torch.nn.functional.normalize(image.float(), dim=-1)
    unit_t = torch.nn.functional.normalize(text.to(image.device).float(), dim=-1)
    return minmax((unit_i @ unit_t.T).mean(1)).double()  # (n,)


def tilted(relevance: torch.Tensor, theta: float) -> torch.Tensor:
    """q = exp(a r), a = θ / (2 (1 − θ)), divided by its maximum (a common factor leaves the greedy picks
    unchanged and keeps large a from overflowing)."""
    a = theta / (2.0 * (1.0 - theta))
    return torch.exp(a * (relevance - relevance.max()))


def conditional_kernel(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """L = diag(q) S diag(q) with S the cosine similarity of the rows of x (n, D) -> (n, n), float64 (S in
    float32, as llava_arch.py; the greedy updates need the wider type)."""
    unit = torch.nn.functional.normalize(x.float(), dim=-1)
    return quality[:, None] * (unit @ unit.T).double() * quality[None, :]


def dpp_greedy(kernel: torch.Tensor, k: int, eps: float = 1e-10) -> torch.Tensor:
    """Greedy MAP of a DPP with kernel (n, n): k times add the item with the largest gain in det L_Y, using the
    incremental Cholesky rows (Chen et al. 2018). Indices in pick order; when every gain is ~0 (rank spent) the
    rest follow the diagonal (quality), highest first."""
    n = kernel.shape[0]
    gains = kernel.diagonal().clone()  # (n,) det(L_{Y+i}) / det(L_Y) for every candidate i
    floor = eps * float(gains.max()) if n else 0.0
    rows = kernel.new_zeros(min(k, n), n)  # (k, n) Cholesky rows of the picked items, the first t filled
    picks: list[int] = []
    while (t := len(picks)) < min(k, n):
        j = int(torch.argmax(gains))
        if float(gains[j]) <= floor:
            break
        e = (kernel[j] - rows[:t, j] @ rows[:t]) / gains[j].sqrt()  # (n,)
        rows[t] = e
        gains = gains - e * e
        picks.append(j)
        gains[picks] = -float("inf")
    if len(picks) < min(k, n):
        rest = torch.ones(n, dtype=torch.bool, device=kernel.device)
        rest[picks] = False
        by_quality = torch.argsort(kernel.diagonal().masked_fill(~rest, -float("inf")), descending=True, stable=True)
        picks += by_quality[: min(k, n) - len(picks)].tolist()
    return torch.tensor(picks, dtype=torch.long)
