"""How to reach into each supported model family. The only transformers-aware code besides loading.

A family knows: the language model's decoder layers, the vision modules (for timing), where each image's
tokens are and their grids (from the processor output, never constants), the rotary function of its
attention, the decode positions after a pruned prefill, and the box format its answers use.

Adding a family is one module in this package (a `Family` subclass naming its `model_types`; subclasses
register themselves, and `family_for` imports every module here once) plus its tiny builder in the tests.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
from transformers.models.llava_next.modeling_llava_next import (get_anyres_image_grid_shape, image_size_to_num_patches,
                                                                unpad_image)

from .layout import ImageLayout, Segment, split_runs


_REGISTRY: dict[str, type[Family]] = {}  # config.model_type -> family class
_discovered: list[bool] = []  # set once every module of this package has been imported


class Family:
    name = ""
    label = ""  # the family as people name it, used in messages ("Qwen2-VL")
    model_types: tuple[str, ...] = ()  # config.model_type values this class serves (registered on definition)
    box_format = "normalised"  # LLaVA: [x1, y1, x2, y2] in 0..1 of the model's view
    positions = "1-D"
    dynamic_resolution = False  # True: the token grid follows the image's size (downsample resizes the input)
    missing: dict[str, str] = {}  # capability a method `requires` -> why this family lacks it (one clause)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for kind in cls.__dict__.get("model_types", ()):
            _REGISTRY[kind] = cls

    def __init__(self, processor=None):
        self.processor = processor

    @classmethod
    def build_processor(cls, source: str, **pinned):
        """A processor built from its parts where `AutoProcessor` cannot load one offline, else None."""
        return None

    def lacks(self, need: str) -> str | None:
        """Why this family cannot give a method `need` ("cls", "tower_merge"), or None if it can."""
        return self.missing.get(need)

    def cut_hooks(self, model, order_at) -> list:
        """Extra hooks a cut needs on this family (handles, removed with the runtime's), given `order_at(i)`: the
        original positions of the rows entering decoder layer i. None needed unless a family says so."""
        return []

    def lm_layers(self, model) -> torch.nn.ModuleList:
        return model.model.language_model.layers

    def lm_config(self, model):
        return model.config.text_config

    def vision_modules(self, model) -> list[torch.nn.Module]:
        return [model.model.vision_tower, model.model.multi_modal_projector]

    def image_token_id(self, model) -> int:
        return model.config.image_token_id

    def apply_rotary(self, q, k, cos, sin):
        """RoPE as the family's attention applies it; cos/sin are the layer's position_embeddings."""
        return apply_rotary_pos_emb(q, k, cos, sin)

    def decode_position_ids(self, model, prompt_len: int, step: int) -> torch.Tensor:
        """Positions of decode step `step` after a prompt of `prompt_len` tokens (original, unpruned)."""
        return torch.tensor([[prompt_len + step]])  # (1, 1)

    def layouts(self, model, inputs, sizes: list[tuple[int, int]]) -> list[ImageLayout]:
        positions = torch.nonzero(inputs["input_ids"][0] == self.image_token_id(model)).flatten().tolist()
        per_image = [self.segments(model, processor_inputs=inputs, index=i, size=sz) for i, sz in enumerate(sizes)]
        starts = split_runs(positions, [sum(s.count for s in segs) for segs in per_image])
        return [ImageLayout(i, start, tuple(segs)) for i, (start, segs) in enumerate(zip(starts, per_image))]

    def segments(self, model, processor_inputs, index: int, size: tuple[int, int]) -> list[Segment]:
        raise NotImplementedError

    # ---- vision-side access for pre-LLM methods (runtime/probes.py, vision_stage.py) -----------------
    def language_model(self, model) -> torch.nn.Module:
        return model.model.language_model

    def final_norm(self, model) -> torch.nn.Module:
        return model.model.language_model.norm

    def projector(self, model) -> torch.nn.Module:
        return model.model.multi_modal_projector

    def vision_feature_layer(self, model) -> torch.nn.Module:
        """The vision encoder layer whose output LLaVA feeds the projector (CLIP, [CLS] at row 0)."""
        tower = model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        select = model.config.vision_feature_layer
        if not isinstance(select, int):
            raise ValueError("only a single vision_feature_layer is supported by vision-side methods")
        return layers[select % (len(layers) + 1) - 1]  # hidden_states[v]: output of layer v-1

    def vision_attention(self, model) -> torch.nn.Module:
        """The attention module of that layer (its [CLS] row scores the patches)."""
        return self.vision_feature_layer(model).self_attn

    def encoder_layers(self, model) -> torch.nn.ModuleList:
        """The stock CLIP encoder layers (hooked by methods that merge tokens inside the tower)."""
        tower = model.model.vision_tower
        return getattr(tower, "vision_model", tower).encoder.layers

    def vision_index(self, model, inputs, layouts: list[ImageLayout]) -> list[list[torch.Tensor]]:
        """Per image and segment: each token's row in the vision tower's (tiles * patches) output, -1 if none."""
        patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
        return [[torch.arange(patches) + img.index * patches] for img in layouts]

    def vision_tiles(self, model, inputs, layouts: list[ImageLayout]) -> list[list[torch.Tensor]]:
        """Per image and segment: each token's vision-tower tile (its batch row: an image, or LLaVA-NeXT's base
        image or one high-res crop), -1 if none (NeXT's newline tokens)."""
        patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
        return [[torch.where(vidx >= 0, vidx // patches, -1) for vidx in segs]
                for segs in self.vision_index(model, inputs, layouts)]


class Llava(Family):
    """LLaVA-1.5: one (image_size/patch)^2 grid per image; CLS dropped by the 'default' strategy."""

    name = "llava"
    label = "LLaVA-1.5"
    model_types = ("llava",)

    def __init__(self, processor=None):
        super().__init__(processor)
        self.frame_of = crop_frame(getattr(processor, "image_processor", None))

    def segments(self, model, processor_inputs, index, size):
        vision = model.config.vision_config
        side = vision.image_size // vision.patch_size
        if model.config.vision_feature_select_strategy != "default":
            raise ValueError("only the 'default' vision feature strategy (CLS dropped) is supported")
        return [Segment(0, (side, side), "image", self.frame_of(size))]


class LlavaNext(Family):
    """LLaVA-NeXT (anyres): a base grid, then the unpadded high-res grid with one newline token per row."""

    name = "llava_next"
    label = "LLaVA-NeXT"
    model_types = ("llava_next",)

    def segments(self, model, processor_inputs, index, size):
        cfg, vision = model.config, model.config.vision_config
        side = vision.image_size // vision.patch_size
        image_hw = processor_inputs["image_sizes"][index].tolist()  # (H, W) as the processor saw it
        tiles_h, tiles_w = get_anyres_image_grid_shape(image_hw, cfg.image_grid_pinpoints, vision.image_size)
        dummy = torch.zeros(1, tiles_h * side, tiles_w * side)
        h, w = unpad_image(dummy, image_hw).shape[1:]
        return [Segment(0, (side, side), "base"), Segment(side * side, (h, w + 1), "highres")]

    def vision_index(self, model, inputs, layouts):
        cfg, vision = model.config, model.config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        out, first = [], 0
        for img in layouts:
            size = inputs["image_sizes"][img.index]
            tiles = image_size_to_num_patches(size.tolist(), cfg.image_grid_pinpoints, vision.image_size)
            ids = torch.arange(first * patches, (first + tiles) * patches, dtype=torch.float64).view(tiles, patches, 1)
            packed, _ = model.model.pack_image_features([ids], size[None], "default",
                                                        image_newline=torch.tensor([-1.0], dtype=torch.float64))
            flat = packed[0][:, 0].round().long()  # the stock packing applied to row numbers: same layout
            out.append([flat[seg.offset: seg.offset + seg.count] for seg in img.segments])
            first += tiles
        return out


class Qwen2VL(Family):
    """Qwen2-VL: native-resolution grid merged 2x2 (t*h*w / merge^2 tokens); M-RoPE 3-D positions."""

    name = "qwen2_vl"
    label = "Qwen2-VL"
    model_types = ("qwen2_vl",)
    box_format = "qwen"  # (x1,y1),(x2,y2) on 0..1000
    positions = "3-D M-RoPE"
    dynamic_resolution = True  # the processor keeps the image's resolution: fewer pixels, fewer tokens
    missing = {"cls": "Qwen2-VL's vision tower has no [CLS] token to score patches with",
               "tower_merge": "Qwen2-VL's PatchMerger fuses every 2x2 block of patches after the last vision "
                              "block, so tokens cannot be merged inside its tower"}

    def vision_modules(self, model):
        return [model.model.visual]

    @classmethod
    def build_processor(cls, source, **pinned):
        """Stock AutoProcessor wants a torchvision video processor: image processor + tokenizer instead."""
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from .qwen2_vl_processor import Qwen2VLImageTextProcessor

        tokenizer = AutoTokenizer.from_pretrained(source, **pinned)
        return Qwen2VLImageTextProcessor(Qwen2VLImageProcessorPil.from_pretrained(source, **pinned), tokenizer,
                                         chat_template=repo_chat_template(source, tokenizer, **pinned))

    def segments(self, model, processor_inputs, index, size):
        vision = model.config.vision_config
        merge = vision.spatial_merge_size
        t, h, w = processor_inputs["image_grid_thw"][index].tolist()
        view = (w * vision.patch_size, h * vision.patch_size)  # the resized image the tower saw, in pixels
        return [Segment(0, (t * h // merge, w // merge), "image", view_px=view)]

    def vision_attention(self, model):
        from ..methods.base import MethodError
        raise MethodError(f"{self.label}'s vision tower has no [CLS] token, so [CLS]-attention methods do not "
                          "apply to it; use an LLM-side method (fastv, dart, sparsevlm) or divprune")

    def vision_index(self, model, inputs, layouts):
        return self.vision_attention(model)

    def encoder_layers(self, model):
        from ..methods.base import MethodError
        raise MethodError(f"{self.label}'s vision tower has no [CLS] token (no key token set) and its PatchMerger "
                          "fuses every 2x2 block of patches after the last block, so tokens cannot be merged inside "
                          "it; use an LLM-side method (fastv, dart, sparsevlm) or divprune")

    def token_pixels(self, model) -> int:
        """Side in pixels of one LM image token: patch x spatial merge (28 on Qwen2-VL)."""
        vision = model.config.vision_config
        return vision.patch_size * vision.spatial_merge_size

    def decode_position_ids(self, model, prompt_len, step):
        delta = int(model.model.rope_deltas.flatten()[0])  # set by the prefill's get_rope_index
        return torch.full((3, 1, 1), prompt_len + step + delta)  # (3, batch, 1)


def repo_chat_template(source: str, tokenizer, **pinned) -> str | None:
    """The processor's chat template a repo ships (chat_template.jinja, or .json as older repos), else the
    tokenizer's."""
    import json

    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False, **pinned)
        if path:
            with open(path) as fh:
                text = fh.read()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return getattr(tokenizer, "chat_template", None)


def crop_frame(image_processor):
    """The part of an upload (fractions of width/height) that a CLIP-style processor shows the model."""
    def frame(size: tuple[int, int]) -> tuple[float, float, float, float]:
        width, height = size
        if image_processor is None:
            return (0.0, 0.0, 1.0, 1.0)
        if getattr(image_processor, "do_pad", False):  # original LLaVA: pad to a square first
            side = max(width, height)
            fx, fy = (side - width) / 2 / width, (side - height) / 2 / height
            return (-fx, -fy, 1 + fx, 1 + fy)
        if not getattr(image_processor, "do_center_crop", False):
            return (0.0, 0.0, 1.0, 1.0)
        short = (image_processor.size or {}).get("shortest_edge")
        crop = image_processor.crop_size or {}
        if not short or not crop:
            return (0.0, 0.0, 1.0, 1.0)
        scale = short / min(width, height)
        rw, rh = width * scale, height * scale
        cw, ch = min(crop["width"], rw), min(crop["height"], rh)
        x0, y0 = (rw - cw) / 2 / rw, (rh - ch) / 2 / rh
        return (x0, y0, x0 + cw / rw, y0 + ch / rh)
    return frame


def family_class(model_type: str) -> type[Family]:
    """The family class registered for a config's `model_type` (every module of this package imported once)."""
    if not _discovered:
        for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
            importlib.import_module(f"{__package__}.{module.name}")
        _discovered.append(True)
    if model_type not in _REGISTRY:
        names = ", ".join(sorted({cls.label for cls in _REGISTRY.values()}))
        raise ValueError(f"model type {model_type!r} is not supported ({names} are)")
    return _REGISTRY[model_type]


def family_for(model, processor=None) -> Family:
    return family_class(model.config.model_type)(processor)

