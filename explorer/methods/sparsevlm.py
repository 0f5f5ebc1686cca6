"""SparseVLM (Zhang et al., ICML 2025), v1: text-guided progressive sparsification with token recycling.

Raters: on the LM's input embeddings, each text token (after the image) gets the mean over image tokens of
softmax_text(image . text); the raters are the text tokens above the mean. At each SparseVLM layer L
(2, 6, 15 by default) the raters' attention to the surviving image tokens (layer L, heads averaged,
averaged over raters) scores them; the top ones are kept and the output of layer L is cut, i.e. the input
of layer L+1 (this engine's K = L+1); layers beyond the model's depth are dropped (the engine runs
`for_depth`, a copy; its result reports the layers it cut after). Recycling: of the dropped
tokens, the top 30 % (+1) by that score are clustered (density-peak kNN clustering) and each cluster is
averaged into one token, placed at its group's first position; merged tokens compete again at later cuts.

Budgets (`convention`): "paper" keeps, at cut i, the authors' top-k list entry for the setting nearest to
`keep` (192/128/96/64) plus the clusters their formula forms; "final" ends at exactly `keep` after a
geometric schedule. Either way the clusters are at most the authors' share at 576 tokens (see `recycled`).
Positions stay the original ones (the code renumbers them contiguously after each cut).

LLaVA-NeXT, as the authors / here: their code (modelling_sparse_llama.py, `image_shape` = the length of the
image's features: base + high-res grid with its newline tokens) takes one top-k over the whole image span, newline
tokens candidates like any token, and clusters the recycled tokens of the whole span, so a cluster may mix base
and high-res tokens. Here the same by default (`span` "joint"): one ranking and one clustering per cut over the
span's survivors; a cluster across grids stands at its first member's position (in the base grid when it has
one there) where their code appends the clusters after the kept image tokens. ranking="per_grid" ranks and
clusters each grid on its own, the image's per-cut count split by size.
"""
from dataclasses import dataclass

import torch

from .base import Selection, SegmentView
from .knobs import knob
from .scoring import top_k_sorted
from .staged import LayeredMethod, probed

# Top-k kept at the cuts after layers 2 / 6 / 15 for each named setting: Gumpest/SparseVLMs,
# llava/model/language_model/score.py (v1 lists, sparse_token_list_192/128/96/64), tuned on LLaVA-1.5's 576 tokens.
SETTINGS = {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)}
REFERENCE_TOKENS = 576  # LLaVA-1.5's image tokens, the size the lists were set for
RECYCLE = 0.3  # share of the dropped tokens that is clustered (modelling_sparse_llama.py: "Top 30%")


def authors_clusters(dropped: int, recycle: float = RECYCLE) -> int:
    """Clusters the authors' code forms from `dropped` tokens: int(pool / 10) + 1, pool = int(0.3 d) + 1
    (Gumpest/SparseVLMs, llava/model/language_model/modelling_sparse_llama.py)."""
    return int((int(dropped * recycle) + 1) / 10) + 1 if dropped > 0 else 0


def nearest_setting(k: int) -> int:
    """The authors' named setting closest to k (ties go to the smaller)."""
    return min(SETTINGS, key=lambda s: (abs(s - k), s))


def paper_schedule(setting: int, n: int, scale: float = 1.0, cap: bool = True) -> list[tuple[int, int]]:
    """(top-k, clusters) at each cut of the authors' code for `setting` on an image of n tokens. As the code:
    top = min(list entry, survivors - 1), clusters from the dropped ones. `cap`: clusters at most the authors'
    count on 576 tokens (their share), so a 2000-token image does not turn most of the budget into clusters.
    `scale` shrinks the lists and that cap for one grid of a multi-grid image (its share of the budget)."""
    ref = paper_schedule(setting, REFERENCE_TOKENS, cap=False) if cap else None
    out, alive = [], n
    for i, entry in enumerate(SETTINGS[setting]):
        top = max(1, min(round(entry * scale), alive - 1))
        clusters = authors_clusters(alive - top)
        if ref is not None:
            clusters = min(clusters, max(1, round(ref[i][1] * scale)))
        out.append((top, clusters))
        alive = top + clusters
    return out


@dataclass(frozen=True)
class SparseVLM(LayeredMethod, name="sparsevlm", label="SparseVLM (text raters, progressive, recycling)",
                span="joint"):
    """As the authors (Gumpest/SparseVLMs, v1): per-setting top-k lists after layers 2/6/15 ("64": 66/30/17) plus
    clusters of the top 30 % of the dropped tokens, 82/32/18 tokens on 576; positions renumbered. Here: 'paper'
    uses the nearest list, 'final' a geometric schedule ending at the budget; clusters never exceed the authors'
    share at 576 tokens (their formula would make most of a 2000-token budget clusters); positions stay the
    original ones. LLaVA-NeXT: as their code, one ranking and one clustering over the whole image span (base +
    high-res grid, newline tokens included), so a cluster may mix the grids; per grid is the labelled option."""

    where = "inside the LLM: raters' attention at each SparseVLM layer L, cut after it (input of L+1)"
    cut_needs = ("text_attention", "raters")
    layers: tuple[int, ...] = knob((2, 6, 15), "LLM layers L after which the text raters cut (increasing, e.g. 2, "
                                               "6, 15)", range=(0, None), increasing=True)
    recycle: float = knob(0.3, "share of the dropped tokens merged back as clusters", range=(0.0, 0.99))

    def select(self, view: SegmentView, k: int) -> Selection:
        """One cut (the last stage's rule) on a bare view."""
        return self.select_stage(self.cuts - 1, view, k)

    def stage_budget(self, stage: int, n: int, k: int) -> int:
        """Tokens (kept + clusters) of an n-token segment after cut `stage`, for a segment budget k."""
        if self.convention == "paper":
            top, clusters = self._paper(n, k)[min(stage, len(SETTINGS[64]) - 1)]
            return top + clusters
        return max(k, round(k * (n / k) ** ((self.cuts - 1 - stage) / self.cuts)))

    def _setting(self, k: int) -> int:
        return nearest_setting(self.keep if self.keep is not None else k)

    def _paper(self, n: int, k: int) -> list[tuple[int, int]]:
        """The authors' schedule for this segment; a segment of a multi-segment image (LLaVA-NeXT) gets the
        lists scaled by its share k / keep of the image's budget."""
        scale = k / self.keep if self.keep else 1.0
        return paper_schedule(self._setting(k), n, scale)

    def recycled(self, stage: int, m: int, k: int) -> int:
        """Clusters among the k tokens left of m survivors at cut `stage`.

        Both conventions cap them at the authors' share of k: the clusters their code forms at this cut for the
        nearest setting on 576 tokens (16 of 82 at "64"). "paper": the authors' formula on the dropped tokens
        (m - top), so at 576 tokens it is their code's count. "final": the formula on m - k (the old rule)."""
        if m <= k:
            return 0
        setting = self._setting(k)
        ref = paper_schedule(setting, REFERENCE_TOKENS, cap=False)[min(stage, len(SETTINGS[setting]) - 1)]
        cap = min(max(1, round(k * ref[1] / sum(ref))), k - 1)
        if self.convention == "final":
            return max(0, min(authors_clusters(m - k, self.recycle), cap))
        for clusters in range(cap, 0, -1):  # the largest c with c = min(formula(m - (k - c)), cap)
            if min(authors_clusters(m - k + clusters, self.recycle), cap) == clusters:
                return clusters
        return 0

    @staticmethod
    def choose_raters(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(T,) bool: text tokens whose relevance to the image (mean softmax over text) exceeds the mean."""
        relevance = (image.float() @ text.float().T).softmax(dim=1).mean(0)  # (T,)
        return relevance > relevance.mean()

    def select_stage(self, stage: int, view: SegmentView, k: int) -> Selection:
        scores = probed(view, "text_attention").float().mean(0)  # (n,) raters' attention, averaged over raters
        clusters = self.recycled(stage, view.n, k) if self.recycle > 0 else 0
        kept = top_k_sorted(scores, k - clusters)
        if clusters == 0:
            return Selection(kept=kept, scores=scores)
        rest = torch.tensor([i for i in range(view.n) if i not in set(kept.tolist())], dtype=torch.long)
        recycled = rest[top_k_sorted(scores[rest], min(rest.numel(), int(rest.numel() * self.recycle) + 1))]
        owner = density_peak_clusters(view.hidden[recycled], clusters)
        merge = torch.zeros(clusters, view.n)
        for c in range(clusters):
            members = recycled[owner == c]
            merge[c, members] = 1.0 / members.numel()
        return Selection(kept=kept, scores=scores, merge=merge)


def density_peak_clusters(x: torch.Tensor, clusters: int) -> torch.Tensor:
    """DPC-kNN as in SparseVLM's code: density from the k nearest distances, centres = top density x distance
    to a denser token; every token joins its nearest centre. Returns each token's cluster (m,). Deterministic
    (ties go to the lower index instead of the code's 1e-6 random noise)."""
    m = x.shape[0]
    dist = torch.cdist(x.double(), x.double()) / x.shape[1] ** 0.5  # (m, m)
    near = dist.topk(min(clusters, m), dim=-1, largest=False).values
    density = (-(near ** 2).mean(-1)).exp()
    idx = torch.arange(m)
    tie = (density[None, :] == density[:, None]) & (idx[None, :] < idx[:, None])  # ties: earlier is denser
    denser = (density[None, :] > density[:, None]) | tie  # [i, j]: j is denser than i
    to_denser = torch.where(denser, dist, dist.max()).min(-1).values
    centres = torch.argsort(to_denser * density, descending=True, stable=True)[:clusters]
    owner = dist[centres].argmin(0)  # (m,) nearest centre
    owner[centres] = torch.arange(clusters)
    return owner
