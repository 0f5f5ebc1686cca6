"""Qwen3-VL (`qwen3_vl`): Qwen2-VL's token layout, interleaved M-RoPE, DeepStack.

Checked against transformers 5.23's `modeling_qwen3_vl.py`: the tower merges 2x2 patches of 16 px into one LM
token (t*h*w / merge^2 tokens per image, from `image_grid_thw`); the LM applies interleaved 3-D M-RoPE (the
rotary module already returns Llama-layout cos/sin) after per-head RMSNorms on q and k; the prefill caches
`rope_deltas` on `model.model`, which decode positions add, as on Qwen2-VL.

DeepStack: features of some vision blocks (`vision_config.deepstack_visual_indexes`) are added to the outputs
of the first `len(deepstack_visual_indexes)` decoder layers at the image positions (`visual_pos_masks`), inside
the text model's layer loop. A cut below the last of those layers would leave the stock loop adding full-length
features to a shorter sequence. Handled through public seams, no patched code: a forward pre-hook on the text
model takes the DeepStack features and mask out of its keyword arguments (so the loop adds nothing) and forward
hooks on those decoder layers add each layer's features to the image tokens still present after the cuts (same
addition, same order: bit-identical to stock when nothing is cut). A merged token (pooling, merging methods)
gets its group representative's feature.

Boxes: `{"bbox_2d": [x1, y1, x2, y2]}` on 0..1000 of the image (relative, unlike Qwen2.5-VL). Source: QwenLM/Qwen3-VL
`cookbooks/2d_grounding.ipynb` ("changed from the absolute coordinates used in Qwen2.5-VL to relative coordinates
ranging from 0 to 1000"; it divides by 1000 to plot).
"""
from __future__ import annotations

import torch

from .families import Qwen2VL


class Qwen3VL(Qwen2VL):
    """Qwen3-VL: 2x2-merged native-resolution ViT, interleaved M-RoPE, DeepStack into the first decoder layers."""

    name = "qwen3_vl"
    label = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    box_format = "qwen_1000"
    positions = "3-D M-RoPE"
    missing = {"cls": "Qwen3-VL's vision tower has no [CLS] token to score patches with",
               "tower_merge": "Qwen3-VL's PatchMerger fuses every 2x2 block of patches after the last vision "
                              "block, so tokens cannot be merged inside its tower"}

    def deepstack_layers(self, model) -> int:
        """How many decoder layers (the first ones) get DeepStack features added to their output."""
        return len(model.config.vision_config.deepstack_visual_indexes)

    def cut_hooks(self, model, order_at) -> list:
        """Hooks that add DeepStack features to the tokens that survive the cuts (see the module docstring).

        `order_at(i)`: original positions of the rows leaving decoder layer i, ascending (L_i,)."""
        state: dict = {}

        def take(module, args, kwargs):
            if kwargs.get("deepstack_visual_embeds") is None:
                return None
            state["features"] = kwargs["deepstack_visual_embeds"]  # per layer (V, D), V = image tokens
            state["positions"] = torch.nonzero(kwargs["visual_pos_masks"][0]).flatten()  # (V,) sequence positions
            return args, {**kwargs, "deepstack_visual_embeds": None, "visual_pos_masks": None}

        def add(i):
            def hook(module, args, kwargs, output):
                hidden = output[0] if isinstance(output, tuple) else output  # (1, L_i, D)
                if "features" not in state or hidden.shape[1] == 1 or i >= len(state["features"]):
                    return None
                order = order_at(i).to(hidden.device)
                positions = state["positions"].to(hidden.device)
                present = torch.isin(positions, order)
                rows = torch.searchsorted(order, positions[present])
                hidden = hidden.clone()
                feats = state["features"][i].to(hidden.device, hidden.dtype)[present]
                hidden[0, rows, :] = hidden[0, rows, :] + feats
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            return hook

        lm = self.language_model(model)
        handles = [lm.register_forward_pre_hook(take, with_kwargs=True)]
        layers = self.lm_layers(model)
        for i in range(min(self.deepstack_layers(model), len(layers))):
            handles.append(layers[i].register_forward_hook(add(i), with_kwargs=True))
        return handles
