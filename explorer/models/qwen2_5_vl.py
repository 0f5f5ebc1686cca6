"""Qwen2.5-VL (`qwen2_5_vl`): Qwen2-VL's layout with a windowed-attention vision tower.

What stays as on Qwen2-VL (checked against transformers 5.23's `modeling_qwen2_5_vl.py`): the tower's
PatchMerger fuses 2x2 patches into one LM token (t*h*w / merge^2 tokens per image, from `image_grid_thw`);
the LM applies 3-D M-RoPE with the same cos/sin layout as Llama's `apply_rotary_pos_emb`; the prefill
caches `rope_deltas` on `model.model`, which decode positions add. Still images get temporal position 0
(absolute-time positions only space video frames). The window attention happens inside the tower, before
any method sees a token, so nothing here changes with it.

What differs: answers give boxes in absolute pixels of the *resized* input (the processor's smart-resized
image, `grid * patch_size` on each side), usually as JSON `{"bbox_2d": [x1, y1, x2, y2], ...}`.
Source: a Qwen maintainer in QwenLM/Qwen2.5-VL (now QwenLM/Qwen3-VL) issue 676 ("absolute coordinates based on the
actual input size of the image ... the size after processer"), and that repo's `cookbooks/spatial_understanding.ipynb`.
"""
from __future__ import annotations

from .families import Qwen2VL


class Qwen25VL(Qwen2VL):
    """Qwen2.5-VL: native-resolution windowed ViT, 2x2 patch merge, 3-D M-RoPE; boxes in resized-input pixels."""

    name = "qwen2_5_vl"
    label = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    box_format = "qwen_pixels"
    missing = {"cls": "Qwen2.5-VL's vision tower has no [CLS] token to score patches with",
               "tower_merge": "Qwen2.5-VL's PatchMerger fuses every 2x2 block of patches after the last vision "
                              "block, so tokens cannot be merged inside its tower"}
