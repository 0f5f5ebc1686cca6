"""View 4, "Answer-token attention": what the decode step producing one answer word attended to, drawn over the
method's kept grid beside the same for vanilla. Drawing only; the numbers come from the engine's decode probe."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import render

ABOUT = ("Pick a method and click a word of its answer: the image tokens the step that produced that word attended "
         "to at the chosen layer (heads averaged, shares of the attention on the image), on that method's kept "
         "grid (dark: pruned), beside vanilla producing the same word. One extra run per side, computed with the "
         "engine's probe (no eager attention); also `/answer_attention` in the API.")


def overlay(image: Image.Image, summary: dict, entry: dict, dist: list[float]) -> Image.Image:
    """The grid shaded by `dist` (blue: little, red: most of this image's attention), pruned tokens dark."""
    alive = set(entry["kept"]) | {g[0] for g in entry.get("groups", [])}
    top = max(dist) or 1.0

    def fill(token):
        if token not in alive:
            return (20, 20, 30, 190)
        value = dist[token] / top
        return (*render._heat(value), int(60 + 150 * np.sqrt(value)))

    return render.shade_tokens(image, summary, entry, fill)


def pair_image(images, payload: dict, result: dict, data: dict) -> Image.Image:
    """Method (left) and vanilla (right), every image of the request, each with a title line."""
    font = ImageFont.load_default(size=14)
    sides = []
    word = data["word"].strip() or "␣"
    for title, entries, dists in ((f"{result['label']}: '{word}'", result["images"], data["attention"]["images"]),
                                  (f"Vanilla: '{word}'", None, data["vanilla"]["images"])):
        tiles = []
        for i, (summary, dist) in enumerate(zip(payload["images"], dists)):
            base = images[i] if images else Image.new("RGB", (summary["width"], summary["height"]), (128, 128, 128))
            entry = entries[i] if entries else {**result["images"][i], "kept": list(range(len(dist))), "groups": []}
            tiles.append(overlay(base, summary, entry, dist))
        body = render.hstack(tiles)
        head = Image.new("RGB", (body.width, 24), "white")
        ImageDraw.Draw(head).text((4, 4), f"{title[:60]} · layer {data['layer']}", fill=(0, 0, 0), font=font)
        sides.append(render.vstack([head, body], gap=0))
    return render.hstack(sides, gap=16)
