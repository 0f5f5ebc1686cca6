"""Word-level tokenizer and LLaVA processor for the toy model, built offline with ``tokenizers``.

Every question word, every answer (colour, shape, digit, letter) and every box coordinate 0.00-1.00 is one
token. Pieces follow the Metaspace convention ("▁" marks a preceding space) so decoding round-trips text
exactly: "[0.12, 0.34, 0.56, 0.78]" -> "▁[" "0.12" "," "▁0.34" "," "▁0.56" "," "▁0.78" "]".
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlavaProcessor, PreTrainedTokenizerFast

try:  # the PIL backend: same pixels with or without torchvision installed
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # pragma: no cover
    from transformers import CLIPImageProcessor

from .world import COLOURS, LETTERS, SHAPES, all_answer_words, format_box

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE)
IMAGE_SIZE = 192   # processor output side (pixels)
PATCH = 8          # released patch size: 192 / 8 = 24 x 24 = 576 image tokens
MEAN = [0.48145466, 0.4578275, 0.40821073]   # CLIP normalisation
STD = [0.26862954, 0.26130258, 0.27577711]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER:"
    "{% if message['content'] is string %} {{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %} {{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if loop.last and not add_generation_prompt %}{% else %} ASSISTANT:{% endif %}"
    "{% else %}"
    "{% if message['content'] is string %} {{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %} {{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def _pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Split(pattern=Regex(r"▁?\[|[\],?:]"), behavior="isolated"),
    ])


def _corpus() -> list[str]:
    """Texts covering every word the world and the chat template can produce."""
    texts = ["USER: ASSISTANT:", "What letter is in the image?", " ".join(all_answer_words())]
    for c in COLOURS:
        for s in SHAPES:
            for c2 in COLOURS:
                texts.append(f"Is there a {c} {s} in the image with the {c2} {s}?")
            texts += [f"Is there a {c} {s}?", f"What colour is the {s}?", f"What shape is the {c} object?",
                      f"How many {s}s are there?", f"Where is the {c} {s}?"]
    coords = [i / 100 for i in range(101)]
    texts += [format_box([v, v, v, v]) for v in coords]
    texts += [L for L in LETTERS]
    return texts


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The toy word-level tokenizer wrapped for transformers (with the chat template)."""
    pre = _pre_tokenizer()
    words = set()
    for t in _corpus():
        words.update(p for p, _ in pre.pre_tokenize_str(t))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                  pad_token=PAD, extra_special_tokens={"image_token": IMAGE},
                                  padding_side="left", model_max_length=4096)
    fast.add_special_tokens({"additional_special_tokens": [IMAGE]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_image_processor(image_size: int = IMAGE_SIZE):
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                              image_mean=MEAN, image_std=STD, do_convert_rgb=True)


def build_processor(patch_size: int = PATCH, image_size: int = IMAGE_SIZE) -> LlavaProcessor:
    """LlavaProcessor that expands each <image> into (image_size / patch_size)^2 tokens (CLS dropped)."""
    return LlavaProcessor(image_processor=build_image_processor(image_size), tokenizer=build_tokenizer(),
                          patch_size=patch_size, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)


def prompt_messages(question: str, n_images: int = 1, answer: str | None = None) -> list[dict]:
    """Chat messages for one question about n images (answer appended as an assistant turn if given)."""
    msgs = [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": question}]}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return msgs
