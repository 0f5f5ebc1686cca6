"""VisionZip (Yang et al., CVPR 2025): dominant tokens by [CLS] attention + contextual tokens merged by key
similarity, in the vision tower, before the projector.

At the projector's input layer (vision_feature_layer): dominant = the patches with the highest [CLS]
attention (heads averaged; the original sums heads, same ranking). The rest are filtered; contextual
targets are every `step`-th of them (step = remaining // c); each other remaining token joins the target
whose head-averaged key is most cosine-similar; a contextual token = target + mean of its joiners, formed
on the vision features and then projected. Split: c = round(k * contextual) (the paper's 54+10 at 64,
108+20 at 128, 162+30 at 192 is contextual = 10/64).

Deviation: the original also passes the [CLS] token to the LLM as a dominant token (65 tokens at "64");
LLaVA's prompt has no slot for it, so here exactly k patch tokens survive. Qwen2-VL: no [CLS], refused.
Merge rows (drawing only): the target weighs 1/2, its joiners share 1/2; the merged vectors are exact.
"""
from dataclasses import dataclass

import torch

from .base import MethodError, Selection, SegmentView
from .scoring import top_k_sorted
from .staged import Stage, StagedMethod, probed


@dataclass(frozen=True)
class VisionZip(StagedMethod):
    name = "visionzip"
    label = "VisionZip (dominant + contextual)"
    pre_llm = True
    where = "vision tower: [CLS] attention and keys at the projector's input layer; merged before the projector"
    layer: int = 0
    contextual: float = 10 / 64

    def __post_init__(self) -> None:
        if not 0 <= self.contextual < 1:
            raise MethodError(f"contextual must be in [0, 1), got {self.contextual!r}")
        super().__post_init__()

    def stages(self, n_layers):
        return [Stage(0, ("cls", "vision_keys"), at="projector")]

    def select(self, view: SegmentView, k: int) -> Selection:
        c = min(k - 1, round(k * self.contextual)) if k > 1 else 0
        cls = probed(view, "cls_attention")
        dominant = top_k_sorted(cls, k - c)
        rest = torch.tensor([i for i in range(view.n) if i not in set(dominant.tolist())], dtype=torch.long)
        if c == 0 or rest.numel() == 0:
            return Selection(kept=dominant, scores=cls)
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
        return Selection(kept=dominant, scores=cls, merge=merge, merged=torch.stack(merged))
