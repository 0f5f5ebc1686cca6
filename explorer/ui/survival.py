"""View 3, "Survival per layer": for methods that cut more than once or merge, the tokens surviving each cut
(merged groups coloured), one small overlay per cut. Read from the results' `survivors`; no model call."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from . import render

ABOUT = ("For methods that cut at several layers or merge tokens (SparseVLM, MustDrop, VisionZip, …): one small "
         "overlay per cut, the tokens that survive it clear and merged groups coloured, with the count. From the "
         "results above, no model run; also `/survival` in the API.")
THUMB = 200  # longest side of one frame, pixels


def survival(payload: dict) -> dict:
    """Per method with `survivors` (cut more than once, or merged): per image, one frame per cut with the layer,
    the surviving tokens (image index; a group counted once, by its first token) and the groups."""
    methods = []
    for r in payload["results"]:
        images = r.get("images") or []
        stages = [e.get("survivors") or [] for e in images]
        if not any(len(s) > 1 or any(f.get("groups") for f in s) for s in stages):
            continue
        frames = [[{"layer": f["layer"], "tokens": len(f["kept"]), "kept": f["kept"], "groups": f.get("groups", [])}
                   for f in s] for s in stages]
        methods.append({"method": r["method"], "label": r["label"], "images": [{"frames": f} for f in frames]})
    return {"methods": methods}


def strip_image(images: list[Image.Image] | None, payload: dict, data: dict) -> Image.Image | None:
    """One row per method: its label, then a thumbnail per cut (first image of the request) captioned
    'L<layer>: <n> tokens'; without the page's images on a grey canvas."""
    if not data["methods"]:
        return None
    summary = payload["images"][0]
    base = images[0] if images else Image.new("RGB", (summary["width"], summary["height"]), (128, 128, 128))
    font = ImageFont.load_default(size=13)
    rows = []
    for m in data["methods"]:
        entry = next(r for r in payload["results"] if r["method"] == m["method"])["images"][0]
        tiles = [_frame(base, summary, entry, f, font) for f in m["images"][0]["frames"]]
        label = Image.new("RGB", (150, tiles[0].height), "white")
        ImageDraw.Draw(label).multiline_text((4, 8), _wrap(m["label"]), fill=(0, 0, 0), font=font)
        rows.append(render.hstack([label, *tiles]))
    return render.vstack(rows, gap=10)


def _frame(image, summary, entry, frame, font) -> Image.Image:
    grouped = {t for g in frame["groups"] for t in g}
    stage = {"grid": entry["grid"], **({"segments": entry["segments"]} if "segments" in entry else {}),
             "kept": [t for t in frame["kept"] if t not in grouped], "groups": frame["groups"]}
    tile = render.overlay(image, summary, stage)
    tile.thumbnail((THUMB, THUMB))
    out = Image.new("RGB", (tile.width, tile.height + 20), "white")
    out.paste(tile, (0, 20))
    ImageDraw.Draw(out).text((2, 3), f"L{frame['layer']}: {frame['tokens']} tokens", fill=(0, 0, 0), font=font)
    return out


def _wrap(text: str, width: int = 18) -> str:
    words, lines = text.split(), [""]
    for w in words:
        lines[-1:] = [f"{lines[-1]} {w}".strip()] if len(lines[-1]) + len(w) < width else [lines[-1], w]
    return "\n".join(lines)
