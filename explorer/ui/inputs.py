"""Widget values -> checked values: the reference box, the knobs JSON, the budget and its unit, the page's images.
A bad value is one gr.Error sentence."""
from __future__ import annotations

import json
import math

import gradio as gr
from PIL import Image

from ..engine import InputError, open_image
from ..limits import Limits, real, whole


def image_paths(image, more_images=None) -> list[str]:
    """The first image and the "more images" uploads, in order, empty slots dropped."""
    return [p for p in [image, *(more_images or [])] if p]


def session_images(session: dict | None, limits: Limits, first: int | None = None) -> list[Image.Image] | None:
    """The images the shown results were computed on (all, or the first `first`), or None without a session."""
    if not session:
        return None
    return [open_image(p, limits) for p in session["paths"][:first]]


def parse_reference(text: str | None) -> list[float] | None:
    """'x1, y1, x2, y2' in pixels of the first image, or None when empty."""
    if not text or not str(text).strip():
        return None
    try:
        box = [float(v) for v in str(text).strip().strip("[]()").replace(";", ",").split(",")]
    except ValueError:
        raise gr.Error("The reference box must be four numbers: x1, y1, x2, y2 (pixels).") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise gr.Error("The reference box must be x1, y1, x2, y2 with x2 > x1 and y2 > y1 (pixels).")
    return box


def parse_knobs(text: str | None) -> dict[str, dict]:
    """Per-method knobs from JSON, e.g. {"fastv_window": {"windows": 2}}; build_methods checks each knob."""
    if not text or not str(text).strip():
        return {}
    if len(str(text)) > 10_000:
        raise gr.Error("Method knobs are too long (at most 10,000 characters).")
    try:
        knobs = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = getattr(exc, "msg", "too deeply nested")
        raise gr.Error(f"Method knobs must be JSON like {{\"fastv_window\": {{\"windows\": 2}}}}: {reason}.") from None
    if not isinstance(knobs, dict) or not all(isinstance(v, dict) for v in knobs.values()):
        raise gr.Error("Method knobs must map a method name to an object of knobs.")
    return knobs


def budget_knobs(keep, unit: str | None) -> tuple[int | None, float | None]:
    """(keep, ratio) from the budget number and its unit ('tokens' or '%')."""
    try:
        value = real(keep, "The budget", -math.inf, math.inf)
    except InputError:
        raise gr.Error(f"The budget must be a number, got {str(keep)[:40]!r}.") from None
    if unit and str(unit).startswith("%"):
        if not 0 < value <= 100:
            raise gr.Error(f"A budget in % must be in (0, 100], got {value:g}.")
        return None, value / 100
    if value < 1 or value != int(value):
        raise gr.Error(f"A budget in tokens must be a whole number >= 1, got {value:g}.")
    return whole(value, "A budget in tokens", 1, 10**6), None


def pick_box(reference, evt: gr.SelectData) -> str:
    """Two clicks on the input image draw a reference box (first corner, then the opposite one)."""
    x, y = evt.index[0], evt.index[1]
    parts = [p for p in str(reference or "").replace(" ", "").split(",") if p]
    if len(parts) == 2:
        x0, y0 = float(parts[0]), float(parts[1])
        return f"{min(x0, x):g}, {min(y0, y):g}, {max(x0, x):g}, {max(y0, y):g}"
    return f"{x:g}, {y:g}"
