"""MustDrop (Liu et al. 2024, "Multi-Stage Vision Token Dropping"), checked against the authors' public code
(github.com/liuting20/MustDrop: clip_encoder.py, local_merge.py, modelling_sparse_llama.py). Three stages:

1. Vision encoding (runtime/vision_merge.py, hooks on the stock CLIP encoder layers, SDPA untouched).
   Local spatial merging: the input of encoder layer `tower_layer` (code: after layer 0) is cut into
   non-overlapping `window` x `window` windows of patches (code: 3x3); a window's similarity is the mean
   pairwise cosine of its patches (self-pairs excluded). The r windows with similarity >= `similarity`
   (code: 0.8) are each merged into their mean, with r the same for every tile of the batch (the code takes
   the minimum over the batch so the tower's batch stays rectangular); the tower runs the rest of its
   layers on the shorter sequence, [CLS] kept. Key token set: the [CLS] -> patch attention of the layer that
   reads the features LLaVA selects (code: the last layer, whose input is hidden_states[-2]), heads averaged;
   its top ceil(`key_ratio` x tokens) per tile (code: 8%) are protected from every later cut.
2. Prefilling: dual-attention filtering after each LLM layer L in `layers` (code: 2, 6, 10, 14; this
   engine's cut K = L+1). A = layer-L attention of the text after the image to the surviving image tokens,
   heads averaged (T, n). Global g = A.sum(0), individual i = A.max(0). A token is dropped when
   g < `global_thr` x g.sum() AND i < `individual_thr` (code defaults used in its scripts: 0.001/0.001 for
   192 tokens, 0.011/0.01 for 64); key-set tokens are always kept.
3. Decoding (output-aware cache policy): after prefill the KV cache is cut to the final survivors.
   `kv_layers="all"`: every layer (the issue's reading); `"code"`: as the public code, only from the first
   filtering layer L0 on, layers before it keep the tokens they saw (the vision-stage set).

Exact budget (`keep` = kept + merged groups after the last cut, per image; thresholds stay the knobs):
- the tower merges at most as many windows as leave every segment >= its budget (r is lowered, least
  similar windows given up first, until every segment fits);
- every filtering stage ranks tokens by s = max(g / (global_thr g.sum()), i / individual_thr), so s < 1 is
  exactly the code's drop rule; key tokens rank first. An intermediate stage keeps the s >= 1 tokens and the
  key set, and never fewer than the budget (topping up by s); the last stage keeps exactly the top `keep`
  (if the threshold survivors are more, the lowest s go; if fewer, the highest-s candidates come back).

Deviations, stated: positions stay the original ones (the code renumbers contiguously after each cut and puts
merged tokens first); a merged token sits at its window's first patch; LLaVA-NeXT: the code flattens tiles
(no unpad, no newline), here windows cut by the unpadding or across segments are not merged and the filter's
g.sum() is per segment. Qwen2-VL is refused: its tower has no [CLS] (no key set) and its PatchMerger fuses
every 2x2 block of patches after the last block, so the tower's sequence cannot be shortened.
"""
import math
from dataclasses import dataclass

import torch

from .base import MethodError, Selection, SegmentView
from .knobs import knob
from .scoring import top_k_sorted
from .staged import LayeredMethod, Stage, probed


@dataclass(frozen=True)
class MustDrop(LayeredMethod, name="mustdrop", label="MustDrop (tower window merge + dual-attention filter + KV cut)"):
    """As the authors (liuting20/MustDrop): 3x3 windows of similar patches merged after CLIP layer 1, a
    [CLS]-attended key set protected, thresholds on global/individual text attention at layers 2/6/10/14 decide
    how many tokens stay, KV cache cut after prefill. Here: the same stages, but ranked so the last cut keeps
    exactly the budget in both conventions (thresholds only order); positions original; LLaVA-NeXT per grid. Not
    applicable to Qwen2-VL."""

    cut_cache = True
    requires = ("cls", "tower_merge")
    where = ("3x3 windows merged inside the vision tower; dual-attention filter after each MustDrop layer L "
             "(input of L+1); KV cache cut to the final survivors after prefill")
    stages_before = (Stage(0, ("tower",), at="tower"),)  # the window merge inside the vision tower
    cut_needs = ("text_attention", "key_set")
    span_differs = ("the authors' code flattens the tiles into one span (no unpad, no newline); here per grid, "
                    "the filter's sum per grid")
    similarity: float = knob(0.8, "cosine above which a window's tokens merge in the vision tower", range=(-1.0, 1.0))
    window: int = knob(3, "side of the merge windows (tokens)", range=(2, 16))
    tower_layer: int = knob(1, "vision-tower layer whose input is merged", range=(1, 64))
    key_ratio: float = knob(0.08, "share of tokens in the [CLS]-attention key set, never merged", range=(0.0, 1.0))
    layers: tuple[int, ...] = knob((2, 6, 10, 14), "LLM layers L after which the dual-attention filter cuts "
                                                   "(increasing, e.g. 2, 6, 10, 14)", range=(0, None), increasing=True)
    global_thr: float = knob(0.001, "dropped when its summed text attention is below this share of the total and …",
                             range=(0.0, 1.0))
    individual_thr: float = knob(0.001, "… its largest attention from one text token is below this", range=(0.0, 1.0))
    kv_layers: str = knob("all", "KV cache cut after prefill: all layers, or from the first cut as the code",
                          choices=("all", "code"))

    # ---- stages -------------------------------------------------------------------------------------
    def cache_cut_from(self, n_layers: int) -> int:
        """First layer whose KV cache is cut to the final survivors after prefill."""
        return 0 if self.kv_layers == "all" else self.stages(n_layers)[1].layer - 1

    def select_stage(self, stage: int, view: SegmentView, k: int) -> Selection:
        if stage == 0:
            raise MethodError("mustdrop's vision stage runs inside the tower (runtime/vision_merge.py)")
        return self.filter(view, k, last=stage == self.cuts)

    def select(self, view: SegmentView, k: int) -> Selection:
        """The last filtering stage on a bare view: exactly k tokens."""
        return self.filter(view, k, last=True)

    # ---- stage 1: the tower's window merge ------------------------------------------------------------
    def windows(self, side: tuple[int, int]) -> torch.Tensor:
        """(W, window^2) patch indices of the full non-overlapping windows of a row-major (h, w) grid."""
        h, w = side
        s = self.window
        r = torch.arange(0, h - s + 1, s)[:, None, None, None] + torch.arange(s)[None, None, :, None]
        c = torch.arange(0, w - s + 1, s)[None, :, None, None] + torch.arange(s)[None, None, None, :]
        return (r * w + c).reshape(-1, s * s)

    @staticmethod
    def window_similarity(x: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """(B, W) mean pairwise cosine similarity inside each window, self-pairs excluded. x: (B, P, D)."""
        unit = torch.nn.functional.normalize(x.float(), dim=-1)[:, windows]  # (B, W, m, D)
        sims = unit @ unit.transpose(-1, -2)  # (B, W, m, m)
        m = windows.shape[1]
        return (sims.sum((-1, -2)) - sims.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1))

    def choose_windows(self, sim: torch.Tensor, eligible: torch.Tensor, fits) -> list[torch.Tensor]:
        """Per tile, the windows to merge: the r most similar eligible ones with similarity >= threshold,
        r the same for every tile (the code's batch minimum), lowered until `fits(chosen)` holds."""
        ok = (sim >= self.similarity) & eligible  # (B, W)
        r = int(ok.sum(1).min()) if ok.numel() else 0
        ranked = torch.where(ok, sim, -math.inf).argsort(dim=1, descending=True, stable=True)
        while r > 0 and not fits([row[:r] for row in ranked]):
            r -= 1
        return [row[:r] for row in ranked]

    def key_set(self, cls_attention: torch.Tensor) -> torch.Tensor:
        """(n,) bool: the top ceil(key_ratio * n) tokens of one tile by [CLS] attention."""
        n = cls_attention.numel()
        keys = torch.zeros(n, dtype=torch.bool)
        keys[top_k_sorted(cls_attention, math.ceil(self.key_ratio * n))] = True
        return keys

    # ---- stage 2: dual-attention filtering -------------------------------------------------------------
    def threshold_score(self, attention: torch.Tensor) -> torch.Tensor:
        """(n,) s = max(g / (global_thr * g.sum()), i / individual_thr); the code drops a token iff s < 1."""
        a = attention.float()  # (T, n) text -> image attention, heads averaged
        g, i = a.sum(0), a.max(0).values
        g_thr, i_thr = self.global_thr * g.sum(), torch.tensor(self.individual_thr)
        g_s = torch.where(g_thr > 0, g / g_thr, torch.full_like(g, math.inf))
        i_s = torch.where(i_thr > 0, i / i_thr, torch.full_like(i, math.inf))
        return torch.maximum(g_s, i_s)

    def filter(self, view: SegmentView, k: int, last: bool) -> Selection:
        s = self.threshold_score(probed(view, "text_attention"))
        keys = view.cls_attention > 0 if view.cls_attention is not None else torch.zeros(view.n, dtype=torch.bool)
        order = torch.argsort(s, descending=True, stable=True)  # by s, then key tokens first
        order = order[torch.argsort(keys[order].to(torch.int8), descending=True, stable=True)]
        survive = keys | (s >= 1)
        count = k if last else max(k, int(survive.sum()))
        return Selection(kept=torch.sort(order[:count]).values, scores=s.clamp(max=1e9), parts={"key": keys.float()})
