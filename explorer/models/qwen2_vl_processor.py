"""A Qwen2-VL processor built from its image processor and tokenizer.

Stock `AutoProcessor` for Qwen2-VL also wants a video processor, which needs torchvision; where that is
missing (this CPU machine) the engine builds this one instead. It does what the stock processor does for
images: pixel patches + `image_grid_thw`, each image placeholder expanded to t*h*w/merge^2 tokens, and
`mm_token_type_ids` (1 on image tokens) that M-RoPE needs.
"""
from __future__ import annotations

import torch
from transformers import BatchFeature


class Qwen2VLImageTextProcessor:
    image_token = "<|image_pad|>"

    def __init__(self, image_processor, tokenizer, chat_template: str | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = False, **kw):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, images=None, text=None, return_tensors: str = "pt", **kw) -> BatchFeature:
        text = text[0] if isinstance(text, list) else text
        data = {}
        if images:
            vision = self.image_processor(images=images, return_tensors="pt")
            data.update(vision)
            merge = self.image_processor.merge_size ** 2
            counts = [int(thw.prod()) // merge for thw in vision["image_grid_thw"]]
            pieces = text.split(self.image_token)
            if len(pieces) - 1 != len(counts):
                raise ValueError(f"prompt has {len(pieces) - 1} image placeholders for {len(counts)} images")
            text = pieces[0] + "".join(self.image_token * c + rest for c, rest in zip(counts, pieces[1:]))
        ids = self.tokenizer(text, return_tensors="pt")
        data["input_ids"], data["attention_mask"] = ids["input_ids"], ids["attention_mask"]
        data["mm_token_type_ids"] = (ids["input_ids"] == self.image_token_id).long()  # (1, L)
        return BatchFeature(data=data, tensor_type=None)

    def batch_decode(self, ids, **kw):
        return self.tokenizer.batch_decode(ids, **kw)

    def decode(self, ids, **kw):
        return self.tokenizer.decode(ids, **kw)
