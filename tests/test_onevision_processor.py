"""LLaVA-OneVision's offline processor: the stock class through its own constructor, and what it relies on."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionProcessor
from transformers.utils import is_torchvision_available

from explorer.models.llava_onevision import OnevisionImageTextProcessor

SIZES = [(32, 32), (64, 40), (40, 64), (100, 30), (30, 100), (17, 90), (200, 150)]  # (width, height)


def photo(size, seed=0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    w, h = size
    return Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy())


@pytest.mark.skipif(is_torchvision_available(), reason="with torchvision the stock constructor can type-check a video "
                                                       "processor")
def test_stock_constructor_without_torchvision_fails_whatever_the_video_processor(loaded):
    """Why OnevisionImageTextProcessor exists. If this starts passing construction (a transformers release that
    skips a None sub-processor or exports VideoProcessorMixin without torchvision), build the stock class directly
    with video_processor=None and drop the subclass."""
    stock = loaded["llava_onevision"].processor
    for extra in ({"video_processor": None}, {}):
        with pytest.raises((AttributeError, TypeError, ValueError)):
            LlavaOnevisionProcessor(image_processor=stock.image_processor, tokenizer=stock.tokenizer,
                                    num_image_tokens=16, **extra)


def test_offline_processor_is_the_stock_class_set_up_by_its_constructor(loaded):
    proc = loaded["llava_onevision"].processor
    assert isinstance(proc, OnevisionImageTextProcessor) and isinstance(proc, LlavaOnevisionProcessor)
    assert type(proc).get_attributes() == ["image_processor", "tokenizer"] and not hasattr(proc, "video_processor")
    # set by LlavaOnevisionProcessor.__init__ from the repo's processor_config.json and the tokenizer
    assert proc.num_image_tokens == 16 and proc.vision_feature_select_strategy == "full"
    assert proc.vision_aspect_ratio == "anyres_max_1" and proc.image_token == "<image>"
    assert proc.image_token_id == proc.tokenizer.convert_tokens_to_ids("<image>")
    assert proc.video_token_id == proc.tokenizer.convert_tokens_to_ids("<video>")


def test_text_expansion_equals_the_model_feature_count(loaded):
    """The stock text expansion (`_get_number_of_features`) gives each image exactly as many placeholder tokens as
    the stock model's `get_image_features` returns feature rows, for square, wide, tall, tiny and shrunk
    (anyres_max) images, alone and two in one prompt; and the family's grids cover exactly those tokens."""
    lm = loaded["llava_onevision"]
    proc, model, cfg = lm.processor, lm.model, lm.model.config
    messages = lambda n: [{"role": "user", "content": [*({"type": "image"} for _ in range(n)),  # noqa: E731
                                                       {"type": "text", "text": "what is in the image ?"}]}]
    cases = [[s] for s in SIZES] + [[SIZES[1], SIZES[3]]]
    for sizes in cases:
        images = [photo(s, i) for i, s in enumerate(sizes)]
        inputs = proc(images=images, text=proc.apply_chat_template(messages(len(images)), add_generation_prompt=True),
                      return_tensors="pt")
        ids = inputs["input_ids"][0]
        with torch.no_grad():
            feats = model.model.get_image_features(
                inputs["pixel_values"], inputs["image_sizes"], vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                vision_aspect_ratio=cfg.vision_aspect_ratio, batch_num_images=inputs["batch_num_images"]).pooler_output
        per_image = [f.shape[0] for f in feats]
        assert int((ids == proc.image_token_id).sum()) == sum(per_image), sizes
        layouts = lm.family.layouts(model, inputs, sizes)
        assert [img.count for img in layouts] == per_image, sizes
        with torch.no_grad():
            assert torch.isfinite(model(**inputs).logits).all()  # the stock forward accepts the expansion
