"""A second, independent drawing of the shapes world, for evaluation only (never used in training).

``redraw(sample, rng)`` keeps every object of a sample (kind, colour name, shape, letter, box) and draws the
scene again the way another program following the world's description might: a two-colour light gradient
background, shapes anti-aliased by 4x supersampling in a fixed palette (matplotlib's "tab" colours and gold:
shades the generator never picks exactly), equilateral-looking triangles, and letters in Pillow's default
font. The question and answer stay true, so accuracy on redrawn scenes measures whether the model learned
the description rather than the generator's pixels (``python -m explorer.toy.evaluate --drawer alt``).
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = {"red": (214, 39, 40), "orange": (255, 127, 14), "yellow": (255, 215, 0), "green": (44, 160, 44),
           "blue": (31, 119, 180), "purple": (148, 103, 189)}
SUPER = 4


def _gradient(rng: random.Random, size: int) -> Image.Image:
    """A light two-colour linear gradient at a random angle."""
    a = np.array([rng.randint(225, 255) for _ in range(3)], np.float32)
    b = np.array([rng.randint(225, 255) for _ in range(3)], np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    t = (np.cos(ang) * xx + np.sin(ang) * yy)
    t = (t - t.min()) / max(1e-6, t.max() - t.min())
    arr = a * (1 - t[..., None]) + b * t[..., None]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _draw_object(draw: ImageDraw.ImageDraw, obj: dict, side: int) -> None:
    x1, y1, x2, y2 = (v * side * SUPER for v in obj["box"])
    fill = PALETTE[obj["colour"]]
    if obj["shape"] == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=fill)
    elif obj["shape"] == "square":
        draw.rectangle((x1, y1, x2, y2), fill=fill)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)


def redraw_scene(rng: random.Random, objs: list[dict], size: int) -> Image.Image:
    """One scene with the same objects (boxes normalised to the side) drawn by this module's rules."""
    big = _gradient(rng, size).resize((size * SUPER, size * SUPER), Image.BILINEAR)
    draw = ImageDraw.Draw(big)
    for obj in objs:
        if obj["kind"] == "shape":
            _draw_object(draw, obj, size)
    img = big.resize((size, size), Image.LANCZOS)
    text = ImageDraw.Draw(img)
    for obj in objs:
        if obj["kind"] == "letter":
            x1, y1, x2, y2 = (v * size for v in obj["box"])
            font = ImageFont.load_default(size=max(6, int((y2 - y1) * 1.3)))
            l, t, _, _ = text.textbbox((0, 0), obj["letter"], font=font)
            text.text((x1 - l, y1 - t), obj["letter"], font=font, fill=(20, 20, 20))
    return img


def redraw(sample: dict, rng: random.Random) -> dict:
    """The sample with every image drawn again (same objects, question, answer and box)."""
    images = [redraw_scene(rng, objs, im.width) for im, objs in zip(sample["images"], sample["objects"])]
    return {**sample, "images": images}
