"""LLaVA-OneVision (`llava_onevision`): SigLIP tower, anyres-max crops with newline tokens, Qwen2 LM.

Checked against transformers 5.23's `modeling_llava_onevision.py`: each image is the base image (one tile,
(image_size / patch)^2 tokens, no newline) followed by its high-res tiles packed into one grid, unpadded to the
image's aspect ratio, shrunk by bilinear interpolation when it exceeds `anyres_max_N` tiles' worth of tokens
(ratio > 1.1), with one newline token appended to every row. SigLIP has no [CLS] token and the checkpoints
keep every patch (`vision_feature_select_strategy="full"`). Positions are 1-D (Qwen2 LM, plain RoPE).

The grids come from the model's own `pack_image_features` applied to the processor's `image_sizes`, so
the segments are exactly what the stock forward builds. The high-res tokens are interpolated mixtures of
tower outputs when the image is large, so there is no one vision row per token: methods that score inside
the tower need a [CLS] anyway, which SigLIP lacks.

Boxes: `[x1, y1, x2, y2]` as 0..1 fractions of the image's width and height. Sources: LMMs-Lab's lmms-eval
RefCOCO task (EvolvingLMMs-Lab/lmms-eval, lmms_eval/tasks/refcoco/utils_rec.py; LMMs-Lab trained and released
OneVision) prompts for "(top-left x, top-left y, bottom-right x, bottom-right y) ... floating point numbers bounded
between 0 and 1", passes the image as is and normalises the references by the original width and height; the
OneVision SI data (LLaVA-VL/LLaVA-NeXT scripts/train/single_image.yaml) starts from the LLaVA-NeXT mix, built on
LLaVA-1.5's, whose grounding answers are 0..1 `[x1, y1, x2, y2]` text (there of LLaVA-1.5's padded square;
OneVision pads nothing). The stored model-card pages searched state no box format, and grounding data is a small share of the mix (LLaVA-VL/LLaVA-NeXT issue 474 reports visibly offset
boxes from the 0.5B model). The frame is the whole upload: the stock processor squashes the whole image into
the base tile (no crop, no pad) and the model unpads the high-res grid (tests/test_boxes.py checks both).
"""
from __future__ import annotations

import json

import torch
from transformers import LlavaOnevisionProcessor

from .families import Family, repo_chat_template
from .layout import Segment


class LlavaOnevision(Family):
    """LLaVA-OneVision: a base grid, then the (unpadded, anyres-max shrunk) high-res grid + newline column."""

    name = "llava_onevision"
    label = "LLaVA-OneVision"
    model_types = ("llava_onevision",)
    box_format = "normalised"  # [x1, y1, x2, y2] on 0..1 of the whole upload (sources in the module docstring)
    missing = {"cls": "LLaVA-OneVision's SigLIP vision tower has no [CLS] token to score patches with",
               "tower_merge": "LLaVA-OneVision's SigLIP tower has no [CLS] row for MustDrop's in-tower merge to "
                              "pick its key tokens with"}

    @classmethod
    def build_processor(cls, source, **pinned):
        """Stock AutoProcessor wants a torchvision video processor: image processor + tokenizer instead."""
        from transformers import AutoTokenizer
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil)
        from transformers.utils import cached_file

        settings = {}
        found = cached_file(source, "processor_config.json", _raise_exceptions_for_missing_entries=False, **pinned)
        if found:
            with open(found) as fh:
                settings = json.load(fh)
        tokenizer = AutoTokenizer.from_pretrained(source, **pinned)
        template = repo_chat_template(source, tokenizer, **pinned)
        keep = ("num_image_tokens", "vision_feature_select_strategy", "vision_aspect_ratio", "image_token",
                "video_token")
        return OnevisionImageTextProcessor(LlavaOnevisionImageProcessorPil.from_pretrained(source, **pinned),
                                           tokenizer, chat_template=template,
                                           **{k: v for k, v in settings.items() if k in keep})

    def segments(self, model, processor_inputs, index, size):
        base, highres = self._grids(model, processor_inputs["image_sizes"][index])
        return [Segment(0, base, "base"), Segment(base[0] * base[1], highres, "highres")]

    @staticmethod
    def _grids(model, image_size: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        """(base grid, high-res grid incl. its newline column) as the stock packing lays out one image."""
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        cfg, vision = model.config, model.config.vision_config
        side = vision.image_size // vision.patch_size
        tiles = image_size_to_num_patches(image_size.tolist(), cfg.image_grid_pinpoints, vision.image_size)
        dummy = [torch.zeros(tiles, side * side, 1)]  # (tiles, patches, 1): only the shapes matter
        newline = torch.full((1,), -1.0)
        packed, _ = model.model.pack_image_features(dummy, image_size[None], image_newline=newline,
                                                    vision_aspect_ratio=cfg.vision_aspect_ratio)
        flat = packed[0][side * side:, 0]  # the high-res part, row-major, newline tokens = -1
        per_row = int(torch.nonzero(flat == -1).flatten()[0]) + 1  # width incl. the newline column
        return (side, side), (flat.numel() // per_row, per_row)

    def vision_attention(self, model):
        from ..methods.base import MethodError
        raise MethodError(self.missing["cls"] + "; use an LLM-side method (fastv, dart, sparsevlm) or divprune")

    def vision_index(self, model, inputs, layouts):
        return self.vision_attention(model)

    def encoder_layers(self, model):
        from ..methods.base import MethodError
        raise MethodError(self.missing["tower_merge"] + "; use an LLM-side method (fastv, dart, sparsevlm) or "
                          "divprune")


class OnevisionImageTextProcessor(LlavaOnevisionProcessor):
    """The stock `LlavaOnevisionProcessor`, built by its own constructor, declared without a video processor.

    Why a subclass and not `LlavaOnevisionProcessor(image_processor, tokenizer, video_processor=None, ...)`: on
    transformers 5.23 without torchvision that call cannot succeed, whatever is passed as the video processor.
    `ProcessorMixin.__init__` type-checks every sub-processor named in the class's `__init__` signature
    (`get_attributes`), `None` included, against its base class looked up by name; `VideoProcessorMixin` is
    exported only when torchvision is installed, so the lookup falls through to the dummy
    `VIDEO_PROCESSOR_MAPPING` and raises AttributeError (pinned by tests/test_onevision_processor.py). Here the
    signature names only the image processor and the tokenizer, so `get_attributes` lists those two (the same
    mechanism by which hub processors declare their parts); everything else -- token strings and ids,
    `num_image_tokens`, `vision_aspect_ratio`, chat template, `__call__`, the text expansion
    (`replace_image_token` / `_get_number_of_features`), `image_sizes`, `batch_num_images`, decoding -- is
    the stock class's code. No attribute is set by hand. Videos are not supported (the explorer sends images only).
    """

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)
