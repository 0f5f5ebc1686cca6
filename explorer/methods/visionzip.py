"""VisionZip (Yang et al., CVPR 2025): dominant tokens by [CLS] attention + contextual tokens merged by key
similarity, in the vision tower, before the projector.

At the projector's input layer (vision_feature_layer): dominant = the patches with the highest [CLS]
attention (heads averaged; the original sums heads, same ranking). The rest are filtered; contextual
targets are every `step`-th of them (step = remaining // c); each other remaining token joins the target
whose head-averaged key is most cosine-similar; a contextual token = target + mean of its joiners, formed
on the vision features and then projected. c = round(k * contextual): 10 at 64, 20 at 128, 30 at 192.

Budget (`convention`): the authors' "64" sends 64 tokens, [CLS] included: `visionzip(dominant=54,
contextual=10)` keeps [CLS] + 53 dominant patches + 10 contextual (dvlab-research/VisionZip, README and
visionzip/main.py: dominant - 1 patches; clip_encoder.py puts [CLS] first). "paper" does the same: the [CLS]
row of that layer goes through the projector into the slot of the first patch that is neither dominant nor a
group's first token (the panel draws that cell as kept). "final": k patch tokens, no [CLS] (k - c dominant).
Contextual tokens sit at their group's first patch (the original appends them after the dominant ones).
Qwen2-VL: no [CLS], not applicable.

LLaVA-NeXT, as the authors' code (visionzip/clip_encoder.py, llava_arch.py): the tower runs on the base image and
every high-res crop as one batch and each tile gets its own dominant + contextual selection by its own [CLS] row
(the same counts per tile, so "640/320/160" on 5 tiles is 128/64/32 per tile); the crops' dominant tokens are put
back on the padded crop grid in raster order, each crop's [CLS] and contextual tokens appended, and no newline
token is inserted (the newline tensor they build is unused) and nothing is unpadded. Here (ranking="authors"): the
image's budget shared evenly over its tiles, each tile selecting as above with its own [CLS] attention, keys and
[CLS] row ("paper": [CLS] in each tile's first free slot), newline tokens dropped; a tile ranks only the patches
that reach the LLM (HF unpads), and a tile with fewer patches than its share passes the rest on, so the image
keeps `keep` tokens as theirs do. ranking="per_grid": each grid on its own with the size split (one [CLS], the
first tile's, per grid). Merge rows (drawing only): target 1/2, joiners share 1/2; vectors exact.
"""
from dataclasses import dataclass

import torch

from .base import Selection, SegmentView
from .knobs import knob
from .scoring import top_k_sorted
from .staged import PreLLMMethod, Stage, probed


@dataclass(frozen=True)
class VisionZip(PreLLMMethod, name="visionzip", label="VisionZip (dominant + contextual)",
                span="tiles_no_newlines"):
    """As the authors (dvlab-research/VisionZip): "64" = [CLS] + 53 dominant patches by [CLS] attention + 10
    contextual tokens merged by key similarity, [CLS] first and contextual tokens appended. Here: 'paper' sends
    the same 64 ([CLS] in the first free slot), 'final' 54 + 10 patches and no [CLS]; contextual tokens sit at
    their group's first patch. LLaVA-NeXT as their code: per vision tile (base + each crop), each by its own [CLS]
    attention with the same share, newline tokens dropped; here the image's budget shared evenly over the tiles
    (only patches that survive unpadding are candidates). Not applicable to Qwen2-VL."""

    requires = ("cls",)
    probes, scored_on = ("cls", "vision_keys"), "projector"
    where = "vision tower: [CLS] attention and keys at the projector's input layer; merged before the projector"
    contextual: float = knob(10 / 64, "merged contextual tokens as a share of the budget (authors: 10 of 64)",
                             range=(0.0, 0.99))

    def stages(self, n_layers):
        """The [CLS] row itself too under "paper" (it takes a slot, as the authors')."""
        extra = ("cls_feature",) if self.convention == "paper" else ()
        return [Stage(0, (*self.probes, *extra), at=self.scored_on)]

    def select(self, view: SegmentView, k: int) -> Selection:
        with_cls = self.convention == "paper" and k > 1 and k < view.n
        c = min(k - 1 - with_cls, round(k * self.contextual)) if k > 1 else 0
        cls = probed(view, "cls_attention")
        dominant = top_k_sorted(cls, k - c - with_cls)
        rest = torch.tensor([i for i in range(view.n) if i not in set(dominant.tolist())], dtype=torch.long)
        if c == 0 or rest.numel() == 0:
            return with_cls_token(Selection(kept=dominant, scores=cls), view) if with_cls else \
                Selection(kept=dominant, scores=cls)
        c = min(c, rest.numel())
        step = max(1, rest.numel() // c)
        target_pos = torch.arange(0, rest.numel(), step)[:c]
        others = rest[~torch.isin(torch.arange(rest.numel()), target_pos)]
        targets = rest[target_pos]
        metric = torch.nn.functional.normalize(probed(view, "vision_keys").float(), dim=-1)
        owner = (metric[others] @ metric[targets].T).argmax(1)  # (m,) target each other token joins
        merge = torch.zeros(c, view.n)
        merged = []
        for j, t in enumerate(targets.tolist()):
            members = others[owner == j]
            merge[j, t] = 0.5 if members.numel() else 1.0
            if members.numel():
                merge[j, members] = 0.5 / members.numel()
            extra = view.hidden[members].mean(0) if members.numel() else torch.zeros_like(view.hidden[t])
            merged.append(view.hidden[t] + extra)
        sel = Selection(kept=dominant, scores=cls, merge=merge, merged=torch.stack(merged))
        return with_cls_token(sel, view) if with_cls else sel


def with_cls_token(sel: Selection, view: SegmentView) -> Selection:
    """Add the [CLS] row as one more token, in the slot of the first patch that is neither kept nor a group's
    first (representative) token; that patch leaves its group's drawing, the group's merged vector is unchanged."""
    feature = probed(view, "cls_feature")
    merge = sel.merge if sel.merge is not None else torch.zeros(0, view.n)
    firsts = {int(torch.nonzero(row > 0).min()) for row in merge}
    taken = set(sel.kept.tolist()) | firsts
    slot = next(i for i in range(view.n) if i not in taken)  # exists: k < n leaves a non-kept patch
    merge = merge.clone()
    for row in merge:
        if row[slot] > 0:
            row[slot] = 0.0
            row /= row.sum()
    one = torch.zeros(1, view.n)
    one[0, slot] = 1.0
    merged = sel.merged if sel.merged is not None else (
        sel.merge.to(view.hidden) @ view.hidden if sel.merge is not None else view.hidden[:0])  # (g, Dv)
    return Selection(kept=sel.kept, scores=sel.scores, merge=torch.cat([merge, one]),
                     merged=torch.cat([merged.to(view.hidden), feature.to(view.hidden)[None]]), parts=sel.parts)
