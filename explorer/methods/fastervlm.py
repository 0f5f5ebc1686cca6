"""FasterVLM (Zhang et al. 2024, "[CLS] attention is all you need for training-free visual token pruning").

In the vision tower, at the layer whose output LLaVA feeds the projector (vision_feature_layer, the
penultimate CLIP layer), the [CLS] query's attention to every patch, heads averaged; the k patches with
the highest attention are kept and the rest never reach the LLM. The attention row is recomputed in a
pre-hook on that CLIP attention module (the tower stays on SDPA).

Positions renumbered contiguously (1-D, as the original drops the features). Qwen2-VL's tower has no
[CLS]: the method refuses it.

LLaVA-NeXT, as the authors' code (Theia-4869/FasterVLM, llava_arch.py): every vision tile (the base image and
each high-res crop) keeps its own top-T patches by its own [CLS] row; `prepare_inputs_labels_for_multimodal`
hardcodes mm_patch_merge_type = 'spatial', so the unpad-and-newline branch never runs: no newline token is
inserted and nothing is unpadded. Here (ranking="authors") the image's budget is shared evenly over its tiles and
the runtime applies it (runtime/vision_stage.py), newline tokens dropped; their top-T may fall on padding, here a
tile ranks only the patches that reach the LLM (HF unpads) and a tile with fewer patches than its share passes the
rest on, so the image keeps `keep` tokens. ranking="per_grid": each grid ranked on its own, the size split.
"""
from dataclasses import dataclass

from .base import SegmentView
from .scored import ScoredMethod
from .staged import PreLLMMethod, probed


@dataclass(frozen=True)
class FasterVLM(PreLLMMethod, ScoredMethod, name="fastervlm",
                label="FasterVLM ([CLS] attention, vision tower)", span="tiles_no_newlines"):
    """As the authors: [CLS] attention at the penultimate CLIP layer, heads averaged, the top-k patches go to the
    projector, the rest never reach the LLM. Here: the same, the [CLS] row recomputed in a pre-hook (tower on
    SDPA), positions renumbered. LLaVA-NeXT as their code: per vision tile (base + each crop, each ranked by its
    own [CLS] row), no newline token (their code fixes the merge to 'spatial': no unpad, no newlines); here the
    budget shared evenly over the tiles, only patches that survive unpadding candidates. Not applicable to
    Qwen2-VL (no [CLS])."""

    requires = ("cls",)
    probes, scored_on = ("cls",), "projector"
    where = "vision tower: [CLS] attention at the projector's input layer; cut before the LLM"

    def score(self, view: SegmentView):
        return probed(view, "cls_attention")  # (n,)
