"""Boxes in model answers, parsed per family format and mapped to pixels of the uploaded image."""
from __future__ import annotations

import re

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
LLAVA_BOX = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")  # [x1, y1, x2, y2], 0..1
QWEN_BOX = re.compile(r"\(" + _NUM + "," + _NUM + r"\)\s*,?\s*\(" + _NUM + "," + _NUM + r"\)")  # 0..1000


def parse_boxes(answer: str, box_format: str) -> list[tuple[float, float, float, float]]:
    """Boxes as fractions (0..1) of the model's view of the image."""
    if box_format == "qwen":
        return [tuple(float(v) / 1000 for v in m.groups()) for m in QWEN_BOX.finditer(answer)]
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
