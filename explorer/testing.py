"""Test helpers: tiny random-weight checkpoints of every supported model family, built offline from configs,
a seeded test picture and the repository's paths. Used by tests/ (built once per run, session fixtures in
tests/conftest.py) and benchmarks/ (the config pieces, at real widths).

Each checkpoint is saved with `save_pretrained` to a folder, so tests load it through the same Auto-class path as
a hub checkpoint. Sizes are minimal but keep the real structure (GQA, M-RoPE, anyres tiles, CLS token).
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
EXAMPLES = ROOT / "assets" / "examples"  # the example photos the web page offers

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
                          LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor,
                          LlavaProcessor, PreTrainedTokenizerFast, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

WORDS = ("what is the colour of shape red green blue yes no a an image in there where circle square "
         "triangle how many one two three ? . , : user assistant").split()
CHAT = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ IMG }} {% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}{% endif %} {% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


MROPE = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}  # Qwen2-VL/2.5-VL text rope


def word_tokenizer(specials: list[str]) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>", *specials, *WORDS])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", additional_special_tokens=specials)
    return tok


def text_config(vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra)


def clip_config(image_size: int, patch: int) -> dict:
    return dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, image_size=image_size, patch_size=patch, projection_dim=32)


def build_llava(out: Path, image_size: int = 48, patch: int = 8) -> Path:
    """LLaVA-1.5 shape: CLIP tower (CLS dropped), 2-layer projector, Llama LM; (image_size/patch)^2 tokens."""
    tok = word_tokenizer(["<image>"])
    cfg = LlavaConfig(vision_config=clip_config(image_size, patch),
                      text_config=dict(model_type="llama", **text_config(len(tok))),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                      vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                             crop_size={"height": image_size, "width": image_size}),
                          tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=CHAT.replace("{{ IMG }}", "<image>"))
    return _save(out, model, proc)


def build_llava_next(out: Path, image_size: int = 32, patch: int = 8) -> Path:
    """LLaVA-NeXT shape: anyres tiles + base image, unpadded, one newline token per high-res row."""
    tok = word_tokenizer(["<image>"])
    pinpoints = [[image_size, image_size * 2], [image_size * 2, image_size], [image_size * 2, image_size * 2]]
    cfg = LlavaNextConfig(vision_config=clip_config(image_size, patch),
                          text_config=dict(model_type="llama", **text_config(len(tok))),
                          image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
                          vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    improc = LlavaNextImageProcessor(size={"shortest_edge": image_size}, image_grid_pinpoints=pinpoints,
                                     crop_size={"height": image_size, "width": image_size})
    proc = LlavaNextProcessor(image_processor=improc, tokenizer=tok, patch_size=patch,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=CHAT.replace("{{ IMG }}", "<image>"))
    return _save(out, model, proc)


def build_qwen2_vl(out: Path) -> Path:
    """Qwen2-VL shape: native-resolution ViT, 2x2 patch merge, M-RoPE (3-D positions) in the LM."""
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = word_tokenizer(specials)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    text = text_config(len(tok), rope_parameters=dict(MROPE))
    cfg = Qwen2VLConfig(text_config=dict(model_type="qwen2_vl_text", **text),
                        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
                        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    tok.chat_template = CHAT.replace("{{ IMG }}", "<|vision_start|><|image_pad|><|vision_end|>")
    return _save_qwen(out, model, tok)


def qwen_tokenizer() -> tuple[PreTrainedTokenizerFast, dict]:
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = word_tokenizer(specials)
    tok.chat_template = CHAT.replace("{{ IMG }}", "<|vision_start|><|image_pad|><|vision_end|>")
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    return tok, dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                     vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def build_qwen2_5_vl(out: Path) -> Path:
    """Qwen2.5-VL shape: windowed-attention ViT (2x2-token windows, one full-attention block), RMSNorm/SwiGLU
    tower, 2x2 patch merge, M-RoPE in the LM. Saved as a hub repo holds it: model, tokenizer, image processor."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok, ids = qwen_tokenizer()
    text = text_config(len(tok), rope_parameters=dict(MROPE))
    cfg = Qwen2_5_VLConfig(text_config=dict(model_type="qwen2_5_vl_text", **text),
                           vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                              out_hidden_size=64, patch_size=8, spatial_merge_size=2,
                                              temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1],
                                              tokens_per_second=2),
                           **ids)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    return _save_qwen(out, model, tok)


def build_llava_onevision(out: Path, image_size: int = 32, patch: int = 8) -> Path:
    """LLaVA-OneVision shape: SigLIP tower (no [CLS], every patch kept: strategy "full"), anyres tiles + a base
    image, unpadded, shrunk by anyres_max (here max 1 tile, so the high-res grid is interpolated down), one
    newline token per high-res row, Qwen2 LM."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil)

    tok = word_tokenizer(["<image>", "<video>"])
    pinpoints = [[image_size, image_size * 2], [image_size * 2, image_size], [image_size * 2, image_size * 2]]
    siglip = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=image_size, patch_size=patch)
    cfg = LlavaOnevisionConfig(vision_config=siglip, text_config=dict(model_type="qwen2", **text_config(len(tok))),
                               image_token_id=tok.convert_tokens_to_ids("<image>"),
                               video_token_id=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
                               vision_feature_layer=-1, vision_feature_select_strategy="full",
                               vision_aspect_ratio="anyres_max_1")
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    improc = LlavaOnevisionImageProcessorPil(size={"height": image_size, "width": image_size},
                                             image_grid_pinpoints=pinpoints)
    tok.chat_template = CHAT.replace("{{ IMG }}", "<image>")
    _save(out, model, tok)
    improc.save_pretrained(out)
    processor = {"num_image_tokens": (image_size // patch) ** 2, "vision_feature_select_strategy": "full",
                 "vision_aspect_ratio": "anyres_max_1", "image_token": "<image>", "video_token": "<video>",
                 "processor_class": "LlavaOnevisionProcessor"}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))
    return out


def build_qwen3_vl(out: Path) -> Path:
    """Qwen3-VL shape: ViT with learned (interpolated) position embeddings, 2x2 patch merge, DeepStack (features of
    vision blocks 0 and 1 added to the outputs of LM layers 0 and 1 at the image positions), Qwen3 LM (q/k
    RMSNorm, interleaved M-RoPE)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tok, ids = qwen_tokenizer()
    text = text_config(len(tok), head_dim=16, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                         "mrope_interleaved": True, "rope_theta": 10000.0})
    cfg = Qwen3VLConfig(text_config=dict(model_type="qwen3_vl_text", **text),
                        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                           out_hidden_size=64, patch_size=8, spatial_merge_size=2,
                                           temporal_patch_size=2, num_position_embeddings=16,
                                           deepstack_visual_indexes=[0, 1]),
                        **ids)
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    return _save_qwen(out, model, tok)


def _save_qwen(out: Path, model, tok) -> Path:
    """A tiny Qwen-VL checkpoint with its tokenizer and image processor (8-pixel patches, 2x2 merge). The stock
    Qwen*VLProcessor needs a torchvision video processor; save the parts, as a hub repo holds them."""
    _save(out, model, tok)
    Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                             size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}).save_pretrained(out)
    return out


def _save(out: Path, model, proc) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


BUILDERS = {"llava": build_llava, "llava_next": build_llava_next, "qwen2_vl": build_qwen2_vl,
            "qwen2_5_vl": build_qwen2_5_vl, "llava_onevision": build_llava_onevision, "qwen3_vl": build_qwen3_vl}
FAMILIES = list(BUILDERS)


class Lazy(dict):
    """A dict whose missing entries (of the `known` keys) are made by `make(key)` on first use, then kept: the
    session fixtures build a family's checkpoint only when a test first asks for it."""

    def __init__(self, make, known):
        super().__init__()
        self.make, self.known = make, list(known)

    def __missing__(self, key):
        if key not in self.known:
            raise KeyError(key)
        self[key] = value = self.make(key)
        return value


def picture(seed: int = 0, size=(64, 48)):
    """A seeded random RGB image (width, height) = size."""
    from PIL import Image
    import numpy as np

    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8"))


def run_plan(loaded, prepared, method, steps: int = 3, fixed=None):
    """One pruned prefill + greedy decode of `method` on a prepared input (engine.prepare), outside the engine;
    returns (the pruner's plan, the decoded tokens with every step's logits)."""
    from .runtime.pruner import Pruner
    from .runtime.decode import greedy

    method = method.for_depth(len(loaded.family.lm_layers(loaded.model)))  # as the engine runs it
    with Pruner(loaded.family, loaded.model, method, prepared.layouts, prepared.prompt_len, fixed=fixed) as p:
        decoded = greedy(loaded.model, loaded.family, prepared.inputs, steps, set(), keep_logits=True)
    return p.plan, decoded


# Every registered method with the knob settings its contract is checked under (kvpress's default_presses.py):
# its defaults first, then each knob at its ends or other choices. A new method adds one row here.
METHOD_VARIANTS: dict[str, list[dict]] = {
    "vanilla": [{}],
    "random": [{}, {"seed": 7}],
    "pooling": [{}],
    "avgpool": [{}],
    "fastv": [{}, {"query": "all"}],
    "fastv_reverse": [{}],
    "fastv_window": [{}, {"windows": 1}, {"windows": 2}],
    "fastv_vis": [{}],
    "alpha": [{}, {"alpha": 0.0}, {"alpha": 1.0}],
    "dart": [{}, {"pivot_image": 1, "pivot_text": 0}, {"convention": "final"}],
    "divprune": [{}],
    "fastervlm": [{}, {"convention": "final"}],
    "visionzip": [{}, {"contextual": 0.5}, {"convention": "final"}],
    "sparsevlm": [{}, {"recycle": 0.0}, {"layers": (1, 3)}, {"convention": "final"}],
    "mustdrop": [{}, {"window": 2, "similarity": 0.5}, {"kv_layers": "code"}],
    "cdpruner": [{}, {"theta": 0.0}, {"theta": 1.0}, {"quality": "linear"}],
    "vispruner": [{}, {"important": 0.0}, {"important": 1.0}],
    "downsample": [{}],
}


def method_variants() -> list[tuple[str, dict]]:
    """(method name, knobs) for every row of METHOD_VARIANTS, flattened (pytest parametrize ids: name-knobs)."""
    return [(name, knobs) for name, rows in METHOD_VARIANTS.items() for knobs in rows]
