"""View 2, "Agreement between methods": how alike the kept sets of the methods shown are. No model call.

A method's *kept set* on one image is its `kept` list (image index): the tokens it keeps as themselves. Tokens
that survive only inside a merged group are not counted, so a pure merging method keeps few or none.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import render

ABOUT = ("**Left:** Jaccard of every two methods' kept sets (1 = the very same tokens, 0 = none in common; "
         "vanilla's row is the share each method keeps). **Right:** each token shaded by how many of the pruning "
         "methods kept it (vanilla keeps every token and is left out): yellow cells are kept by all, dark ones by "
         "none. Redrawn from the results above, no model run; also `/agreement` in the API.")
VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])  # 0 ... all


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets agree fully."""
    return len(a & b) / len(a | b) if a | b else 1.0


def agreement(payload: dict) -> dict:
    """Per image: the methods' kept sets, their Jaccard matrix and how many methods (`consensus_of`: all but
    vanilla) kept each token."""
    results = [r for r in payload["results"] if r.get("status") != "not_applicable"]  # those kept nothing
    if not results:
        raise ValueError("No method ran on this model, so there is nothing to compare.")
    methods = [r["method"] for r in results]
    voters = [m for m in methods if m != "vanilla"] or methods  # vanilla keeps every token: it would add 1 to all
    images = []
    for i, summary in enumerate(payload["images"]):
        kept = [sorted(set(r["images"][i]["kept"])) for r in results]
        sets = [set(k) for k in kept]
        entry = results[0]["images"][i]
        counts = np.zeros(entry["image_tokens"], dtype=int)
        for method, k in zip(methods, kept):
            if method in voters:
                counts[k] += 1
        images.append({"name": summary.get("name"), "grid": entry["grid"], "image_tokens": entry["image_tokens"],
                       **({"segments": entry["segments"]} if "segments" in entry else {}),
                       "kept": dict(zip(methods, kept)),
                       "matrix": [[round(jaccard(a, b), 4) for b in sets] for a in sets],
                       "consensus": counts.tolist()})
    return {"methods": methods, "labels": [r["label"] for r in results], "consensus_of": voters, "images": images}


def matrix_figure(data: dict) -> Image.Image:
    """The Jaccard matrix of every image as annotated heat maps, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, n_img = data["methods"], len(data["images"])
    side = 1.6 + 0.55 * len(names)
    fig, axes = plt.subplots(1, n_img, figsize=(side * n_img + 0.6, side), squeeze=False, dpi=110)
    for ax, img in zip(axes[0], data["images"]):
        m = np.asarray(img["matrix"])
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v > 0.6 else "white")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
        ax.set_yticks(range(len(names)), names, fontsize=9)
        if n_img > 1:
            ax.set_title(str(img["name"] or "")[:40], fontsize=9)
    fig.tight_layout()
    buf = _png(fig)
    plt.close(fig)
    return buf


def _png(fig) -> Image.Image:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def consensus_image(images: list[Image.Image] | None, payload: dict, data: dict) -> Image.Image:
    """Every image with its token grid shaded by how many methods kept each token (dark: none, yellow: all),
    and a legend strip; without the images (an API call outside the page) on a grey canvas."""
    n = len(data["consensus_of"])
    tiles = []
    for i, (summary, img) in enumerate(zip(payload["images"], data["images"])):
        base = images[i] if images else Image.new("RGB", (summary["width"], summary["height"]), (128, 128, 128))
        entry = {"grid": img["grid"], **({"segments": img["segments"]} if "segments" in img else {})}
        tiles.append(_shade(base, summary, entry, img["consensus"], n))
    out = render.hstack(tiles)
    return render.vstack([out, legend(n, out.width)])


def _shade(image: Image.Image, summary: dict, entry: dict, counts: list[int], n: int) -> Image.Image:
    return render.shade_tokens(image, summary, entry,
                               lambda token: (*_colour(counts[token] / n if n else 0.0), 150))


def _colour(share: float) -> tuple[int, int, int]:
    """Viridis at `share` in [0, 1] (dark violet: no method kept the token, yellow: every method did)."""
    x = min(max(share, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(x), len(VIRIDIS) - 2)
    return tuple(int(v) for v in VIRIDIS[i] + (x - i) * (VIRIDIS[i + 1] - VIRIDIS[i]))


def legend(n: int, width: int) -> Image.Image:
    """'kept by 0 … n of the n pruning methods' as n + 1 swatches."""
    font = ImageFont.load_default(size=13)
    out = Image.new("RGB", (width, 30), "white")
    draw = ImageDraw.Draw(out)
    draw.text((4, 7), "kept by", fill=(0, 0, 0), font=font)
    step = max(20, min(36, (width - 240) // (n + 1)))
    for k in range(n + 1):
        x = 60 + k * step
        draw.rectangle((x, 4, x + step - 3, 26), fill=_colour(k / n if n else 0.0))
        draw.text((x + 4, 7), str(k), fill=(255, 255, 255) if k < n / 2 else (0, 0, 0), font=font)
    draw.text((66 + (n + 1) * step, 7), f"of {n} pruning methods", fill=(0, 0, 0), font=font)
    return out
