"""SparseVLM (Zhang et al., ICML 2025), v1: text-guided progressive sparsification with token recycling.

Raters: on the LM's input embeddings, each text token (after the image) gets the mean over image tokens of
softmax_text(image . text); the raters are the text tokens above the mean. At each SparseVLM layer L
(2, 6, 15 by default) the raters' attention to the surviving image tokens (layer L, heads averaged,
averaged over raters) scores them; the top ones are kept and the output of layer L is cut, i.e. the input
of layer L+1 (this engine's K = L+1); layers beyond the model's depth are skipped. Recycling: of the dropped tokens, the top `recycle` fraction (+1) by
that score are clustered (density-peak kNN clustering, `int(m / 10) + 1` clusters) and each cluster is
averaged into one token, placed at its group's first position; merged tokens compete again at later cuts.

Budget: the authors' schedules end at a layer-averaged count ("64" keeps 17 + clusters after layer 15);
here `keep` is what survives the last cut, and the earlier cuts follow a geometric schedule from the
image's size down to it; the layer-averaged count is reported beside it. kept + clusters = each cut's
budget exactly (the cluster count uses the code's formula at that budget). Positions stay the original
ones (the code renumbers them contiguously after each cut; this engine keeps them, as for every LLM cut).
"""
from dataclasses import dataclass

import torch

from .base import MethodError, Selection, SegmentView
from .scoring import top_k_sorted
from .staged import fitting_layers, Stage, StagedMethod, probed


@dataclass(frozen=True)
class SparseVLM(StagedMethod):
    name = "sparsevlm"
    label = "SparseVLM (text raters, progressive, recycling)"
    where = "inside the LLM: raters' attention at each SparseVLM layer L, cut after it (input of L+1)"
    layers: tuple[int, ...] = (2, 6, 15)
    recycle: float = 0.3
    layer: int = 3  # the first cut (K = layers[0] + 1), kept in step with `layers`

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers or list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
            raise MethodError(f"sparsevlm layers must be increasing and >= 0, got {self.layers!r}")
        if not 0 <= self.recycle < 1:
            raise MethodError(f"recycle must be in [0, 1), got {self.recycle!r}")
        super().__post_init__()
        object.__setattr__(self, "layer", self.layers[0] + 1)

    def select(self, view: SegmentView, k: int) -> Selection:
        """One cut (the last stage's rule) on a bare view."""
        return self.select_stage(len(self.layers) - 1, view, k)

    def stages(self, n_layers):
        """One cut after each SparseVLM layer; layers the model does not have (L + 1 >= depth) are skipped."""
        fitting = fitting_layers(self.name, self.layers, n_layers)
        object.__setattr__(self, "_cuts", len(fitting))
        return [Stage(layer + 1, ("text_attention",)) for layer in fitting]

    def stage_budget(self, stage: int, n: int, k: int) -> int:
        cuts = getattr(self, "_cuts", len(self.layers))
        return max(k, round(k * (n / k) ** ((cuts - 1 - stage) / cuts)))

    @staticmethod
    def choose_raters(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(T,) bool: text tokens whose relevance to the image (mean softmax over text) exceeds the mean."""
        relevance = (image.float() @ text.float().T).softmax(dim=1).mean(0)  # (T,)
        return relevance > relevance.mean()

    def select_stage(self, stage: int, view: SegmentView, k: int) -> Selection:
        scores = probed(view, "text_attention").float().mean(0)  # (n,) raters' attention, averaged over raters
        clusters = 0
        dropped = view.n - k
        if self.recycle > 0 and dropped > 0:
            clusters = min(int((int(dropped * self.recycle) + 1) / 10) + 1, k - 1)
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
