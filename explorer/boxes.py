"""Boxes in model answers, parsed per family format and mapped to pixels of the uploaded image."""
from __future__ import annotations

import re

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
LLAVA_BOX = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")  # [x1, y1, x2, y2], 0..1
QWEN_BOX = re.compile(r"\(" + _NUM + "," + _NUM + r"\)\s*,?\s*\(" + _NUM + "," + _NUM + r"\)")  # 0..1000
BBOX_2D = re.compile(r"[\"']bbox_2d[\"']\s*:\s*\[" + ",".join([_NUM] * 4) + r"\]")  # Qwen2.5-VL / Qwen3-VL JSON

# box_format -> what an answer's numbers mean:
#   "normalised"  LLaVA: [x1, y1, x2, y2] in 0..1 of the model's view
#   "qwen"        Qwen2-VL: (x1,y1),(x2,y2) on 0..1000 of the model's view
#   "qwen_pixels" Qwen2.5-VL: {"bbox_2d": [x1, y1, x2, y2]} (or a bare list, or (x1,y1),(x2,y2)) in absolute
#                 pixels of the resized image the processor fed the tower (`view`: its width, height)
#   "qwen_1000"   Qwen3-VL: the same syntax on 0..1000 of the model's view
FORMATS = ("normalised", "qwen", "qwen_pixels", "qwen_1000")


def parse_boxes(answer: str, box_format: str, view: tuple[int, int] | None = None
                ) -> list[tuple[float, float, float, float]]:
    """Boxes as fractions (0..1) of the model's view of the image; `view` = (width, height) in pixels of the
    resized input, needed by "qwen_pixels"."""
    if box_format == "qwen":
        return [tuple(float(v) / 1000 for v in m.groups()) for m in QWEN_BOX.finditer(answer)]
    if box_format in ("qwen_pixels", "qwen_1000"):
        found = ([m.groups() for m in BBOX_2D.finditer(answer)] or [m.groups() for m in LLAVA_BOX.finditer(answer)]
                 or [m.groups() for m in QWEN_BOX.finditer(answer)])
        if box_format == "qwen_1000":
            width = height = 1000.0
        elif view is None:
            raise ValueError("absolute-pixel boxes need the size of the resized input (view)")
        else:
            width, height = float(view[0]), float(view[1])
        return [(float(x1) / width, float(y1) / height, float(x2) / width, float(y2) / height)
                for x1, y1, x2, y2 in found]
    if box_format != "normalised":
        raise ValueError(f"unknown box format {box_format!r} (one of {', '.join(FORMATS)})")
    return [tuple(float(v) for v in m.groups()) for m in LLAVA_BOX.finditer(answer)]


def to_pixels(box, frame, size) -> list[float]:
    """Map a fractional box inside `frame` (fractions of the upload, crop/pad aware) to upload pixels."""
    width, height = size
    fx0, fy0, fx1, fy1 = frame
    x1, y1, x2, y2 = box
    xs = [(fx0 + x * (fx1 - fx0)) * width for x in (x1, x2)]
    ys = [(fy0 + y * (fy1 - fy0)) * height for y in (y1, y2)]
    return [round(min(max(v, 0.0), lim), 1) for v, lim in ((xs[0], width), (ys[0], height), (xs[1], width),
                                                            (ys[1], height))]


def iou(a, b) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
