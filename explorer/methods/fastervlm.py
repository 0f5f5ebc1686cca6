"""FasterVLM (Zhang et al. 2024, "[CLS] attention is all you need for training-free visual token pruning").

In the vision tower, at the layer whose output LLaVA feeds the projector (vision_feature_layer, the
penultimate CLIP layer), the [CLS] query's attention to every patch, heads averaged; the k patches with
the highest attention are kept and the rest never reach the LLM. The attention row is recomputed in a
pre-hook on that CLIP attention module (the tower stays on SDPA).

Positions renumbered contiguously (1-D, as the original drops the features). Qwen2-VL's tower has no
[CLS]: the method refuses it. LLaVA-NeXT: base and high-res grids are scored per tile and laid out with the
stock packing; its newline tokens have no [CLS] attention and are dropped.
"""
from dataclasses import dataclass

from .base import Selection, SegmentView
from .scoring import top_k_sorted
from .staged import Stage, StagedMethod, probed


@dataclass(frozen=True)
class FasterVLM(StagedMethod):
    name = "fastervlm"
    label = "FasterVLM ([CLS] attention, vision tower)"
    note = ("As the authors: [CLS] attention at the penultimate CLIP layer, heads averaged, the top-k patches "
            "go to the projector, the rest never reach the LLM. Here: the same, the [CLS] row recomputed in a "
            "pre-hook (tower on SDPA), positions renumbered; LLaVA-NeXT's newline tokens are dropped (the authors "
            "keep them). Not applicable to Qwen2-VL (no [CLS]).")
    pre_llm = True
    requires = ("cls",)
    where = "vision tower: [CLS] attention at the projector's input layer; cut before the LLM"
    layer: int = 0

    def stages(self, n_layers):
        return [Stage(0, ("cls",), at="projector")]

    def select(self, view: SegmentView, k: int) -> Selection:
        cls = probed(view, "cls_attention")
        return Selection(kept=top_k_sorted(cls, k), scores=cls)
