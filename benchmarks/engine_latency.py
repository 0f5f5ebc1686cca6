"""Latency vs FLOPs on a random-weight LLaVA-1.5-shaped model (24x24 = 576 image tokens), CPU or GPU.

    python benchmarks/engine_latency.py [--layers 8 --hidden 512 --threads 1 --repeats 3 --keep 64]

Prints one row per method: tokens kept at K, layer-averaged tokens, prefill / decode ms (median of repeats),
scoring overhead, KV-cache MB and the FLOPs ratio, so "fewer FLOPs" can be checked against measured time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repository's explorer package
from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration,  # noqa: E402
                          LlavaProcessor)

from explorer.cli import table  # noqa: E402
from explorer.engine import Engine  # noqa: E402
from explorer.methods import make  # noqa: E402
from explorer.settings import SETTINGS, preset  # noqa: E402
from explorer.testing import clip_config, text_config, word_tokenizer  # noqa: E402

METHODS = preset("benchmark")


def build(folder: Path, layers: int, hidden: int) -> Path:
    tok = word_tokenizer(["<image>"])
    text = dict(text_config(len(tok)), hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64)
    cfg = LlavaConfig(vision_config=clip_config(336, 14), text_config=dict(model_type="llama", **text),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                      vision_feature_select_strategy="default")
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 336},
                                                      crop_size={"height": 336, "width": 336}),
                   tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1,
                   chat_template="{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                                 "<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} assistant:"
                   ).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=int, default=SETTINGS.keep)
    ap.add_argument("--new-tokens", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    folder = build(Path(tempfile.mkdtemp()) / "bench-llava", args.layers, args.hidden)
    from PIL import Image
    image = Image.new("RGB", (448, 336), (200, 180, 160))
    engine = Engine(threads=args.threads)
    methods = [make(m, keep=args.keep, layer=SETTINGS.layer) for m in METHODS]
    out = engine.compare([image], "what is the colour of the shape ?", methods, model_id=str(folder),
                         max_new_tokens=args.new_tokens, repeats=args.repeats)
    print(f"# random-weight LLaVA-1.5 shape: {args.layers} layers, hidden {args.hidden}, 576 image tokens, "
          f"keep {args.keep}, {args.repeats} repeats (median), up to {args.new_tokens} new tokens")
    print(table(out))


if __name__ == "__main__":
    main()
