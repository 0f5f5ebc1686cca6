"""The "shapes world": a documented, seeded generator of toy scenes and questions.

A scene is a square RGB image with a light background (plain, noise, stripes or checkerboard), 1-5
non-overlapping filled shapes (circle / square / triangle in red, green, blue, yellow, purple, orange,
side 8-25 % of the image side) and sometimes 1-2 dark capital letters (8-15 % of the side tall).
Shades, textures, fonts and image sizes are randomised so a model trained on it should also read scenes
drawn by any other program that follows the same description.

Question templates (exact wording; answers lower-case):

    existence  Is there a {colour} {shape}?                      -> yes / no (POPE negatives)
    colour     What colour is the {shape}?                       -> colour
    shape      What shape is the {colour} object?                -> shape
    count      How many {shape}s are there?                      -> digit
    grounding  Where is the {colour} {shape}?                    -> [x1, y1, x2, y2] (normalised, 2 dp)
    letter     What letter is in the image?                      -> letter (lower-case)
    haystack   Is there a {colour} {shape} in the image with the {colour2} {shape2}?  -> yes / no

Every function takes a ``random.Random`` so a seed reproduces samples exactly.
"""
from __future__ import annotations

import colorsys
import math
import os
import random
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..boxes import iou  # noqa: F401 - re-exported: world.iou is the grounding metric

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle")
LETTERS = string.ascii_uppercase
TASKS = ("existence", "colour", "shape", "count", "grounding", "letter", "haystack")
NEG_KINDS = ("random", "popular", "adversarial")
# Object prior: mildly non-uniform so POPE's "popular" negatives mean something.
COLOUR_PRIOR = {"red": .22, "blue": .22, "green": .18, "yellow": .14, "orange": .12, "purple": .12}
SHAPE_PRIOR = {"circle": .40, "square": .35, "triangle": .25}
# Hue centre (degrees) and half-width per colour name.
_HUES = {"red": (0, 8), "orange": (28, 6), "yellow": (54, 6), "green": (125, 22), "blue": (220, 18),
         "purple": (280, 14)}
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
_SANS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed.ttf", "DejaVuSansCondensed-Bold.ttf",
         "LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "FreeSans.ttf", "FreeSansBold.ttf",
         "Arial.ttf", "arial.ttf", "Verdana.ttf")
_font_files: list[str] | None = None


def _fonts() -> list[str | None]:
    """Sans-serif TTF files found on this machine, plus None = Pillow's bundled scalable default."""
    global _font_files
    if _font_files is None:
        found = {}
        for d in _FONT_DIRS:
            if os.path.isdir(d):
                for root, _, files in os.walk(d):
                    for f in files:
                        if f in _SANS and f not in found:
                            found[f] = os.path.join(root, f)
        _font_files = [found[k] for k in sorted(found)]
    return [None] + list(_font_files)


def _font(path: str | None, size: int):
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def sample_rgb(rng: random.Random, colour: str) -> tuple[int, int, int]:
    """A random shade of a named colour."""
    h, w = _HUES[colour]
    hue = ((h + rng.uniform(-w, w)) % 360) / 360
    s, v = rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0)
    if colour in ("yellow", "orange", "red"):
        s, v = rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0)
    if colour == "purple":
        v = rng.uniform(0.55, 0.9)
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, s, v))


def _light(rng: random.Random) -> np.ndarray:
    hue = rng.random()
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0, 0.12), rng.uniform(0.88, 1.0))) * 255


def make_background(rng: random.Random, size: int) -> Image.Image:
    """Plain light colour, light noise, light stripes or a light checkerboard."""
    kind = rng.choice(("plain", "noise", "stripes", "checker"))
    base = _light(rng)
    arr = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    if kind == "noise":
        nrs = np.random.default_rng(rng.getrandbits(32))
        arr += nrs.normal(0, rng.uniform(3, 12), (size, size, 1 if rng.random() < .5 else 3))
    elif kind in ("stripes", "checker"):
        other = _light(rng)
        period = rng.randint(max(4, size // 40), max(6, size // 8))
        yy, xx = np.mgrid[0:size, 0:size]
        if kind == "stripes":
            ang = rng.choice((0, 90, 45, 135, rng.uniform(0, 180)))
            t = xx * math.cos(math.radians(ang)) + yy * math.sin(math.radians(ang))
            m = (t // period).astype(int) % 2 == 1
        else:
            m = ((xx // period) + (yy // period)) % 2 == 1
        arr[m] = other
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _shape_polygon(rng: random.Random, shape: str, box) -> list[tuple[float, float]] | None:
    x1, y1, x2, y2 = box
    if shape == "square":
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if shape == "triangle":
        cx = (x1 + x2) / 2 + rng.uniform(-0.15, 0.15) * (x2 - x1)
        if rng.random() < 0.8:
            return [(cx, y1), (x2, y2), (x1, y2)]
        return [(x1, y1), (x2, y1), (cx, y2)]
    return None


def _overlaps(box, boxes, gap) -> bool:
    return any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap
               for b in boxes)


def _place(rng, size, w, h, boxes, gap):
    for _ in range(60):
        x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
        box = (x, y, x + w, y + h)
        if not _overlaps(box, boxes, gap):
            return box
    return None


def sample_objects(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n (colour, shape) pairs drawn from the world's prior."""
    cs, cw = zip(*COLOUR_PRIOR.items())
    ss, sw = zip(*SHAPE_PRIOR.items())
    return [(rng.choices(cs, cw)[0], rng.choices(ss, sw)[0]) for _ in range(n)]


def make_scene(rng: random.Random, size: int | None = None, objects: list[tuple[str, str]] | None = None,
               n_letters: int | None = None, with_mask: bool = False):
    """Draw one scene.

    Returns (image, objs) or, with ``with_mask``, (image, objs, mask) where mask is an (size, size) uint8
    array holding 1 + the index into objs of the object covering each pixel (0 = background; letters
    fill their bounding box). objs: dicts with kind "shape" (colour, shape) or "letter" (letter), and
    box = [x1, y1, x2, y2] normalised to the image side (floats; round for answers).
    """
    size = size or rng.randint(160, 384)
    if objects is None:
        objects = sample_objects(rng, rng.randint(1, 5))
    if n_letters is None:
        n_letters = rng.choice((0, 0, 0, 1, 1, 2))
    img = make_background(rng, size)
    draw = ImageDraw.Draw(img)
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    boxes, objs = [], []
    gap = size * 0.02
    for colour, shape in objects:
        for _ in range(8):
            side = rng.uniform(0.08, 0.25) * size
            w = side if shape == "circle" else side * rng.uniform(0.92, 1.08) if shape == "square" \
                else side * rng.uniform(0.9, 1.2)
            box = _place(rng, size, w, side, boxes, gap)
            if box:
                break
        if box is None:
            continue
        rgb = sample_rgb(rng, colour)
        idx = len(objs) + 1
        poly = _shape_polygon(rng, shape, box)
        if poly is None:
            draw.ellipse(box, fill=rgb)
            mdraw.ellipse(box, fill=idx)
        else:
            draw.polygon(poly, fill=rgb)
            mdraw.polygon(poly, fill=idx)
        boxes.append(box)
        objs.append({"kind": "shape", "colour": colour, "shape": shape, "box": [v / size for v in box]})
    fonts = _fonts()
    for _ in range(n_letters):
        letter = rng.choice(LETTERS)
        height = rng.uniform(0.08, 0.15) * size
        font = _font(rng.choice(fonts), max(6, int(height * 1.35)))
        stroke = rng.choice((0, 0, 1)) if size >= 200 else 0
        l, t, r, b = draw.textbbox((0, 0), letter, font=font, stroke_width=stroke)
        box = _place(rng, size, r - l, b - t, boxes, gap)
        if box is None:
            continue
        dark = tuple(rng.randint(0, 70) for _ in range(3))
        draw.text((box[0] - l, box[1] - t), letter, font=font, fill=dark, stroke_width=stroke,
                  stroke_fill=dark)
        idx = len(objs) + 1
        mdraw.rectangle(box, fill=idx)
        boxes.append(box)
        objs.append({"kind": "letter", "letter": letter, "box": [v / size for v in box]})
    if with_mask:
        return img, objs, np.asarray(mask)
    return img, objs


def format_box(box) -> str:
    """Normalised box -> answer text '[x1, y1, x2, y2]' with two decimals, clipped to [0, 1]."""
    return "[" + ", ".join(f"{min(1.0, max(0.0, v)):.2f}" for v in box) + "]"


def parse_box(text: str) -> list[float] | None:
    """Inverse of format_box, tolerant of spacing; None if not four numbers."""
    try:
        vals = [float(v) for v in text.strip().strip("[]").replace(" ", "").split(",")]
    except ValueError:
        return None
    return vals if len(vals) == 4 else None


def _pairs(objs) -> list[tuple[str, str]]:
    return [(o["colour"], o["shape"]) for o in objs if o["kind"] == "shape"]


def _negative(rng: random.Random, present: list[tuple[str, str]], kind: str) -> tuple[str, str]:
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    if kind == "adversarial" and present:
        c0, s0 = rng.choice(present)
        near = [p for p in absent if p[0] == c0 or p[1] == s0]
        if near:
            return rng.choice(near)
    if kind == "popular":
        return rng.choices(absent, [(COLOUR_PRIOR[c] * SHAPE_PRIOR[s]) ** 2 for c, s in absent])[0]
    return rng.choice(absent)


def _scene_where(rng, size, ok, max_objects=5, n_letters=None, tries=200, min_objects=1):
    """Rejection-sample a scene whose objs satisfy ok(objs)."""
    for _ in range(tries):
        scene = make_scene(rng, size, sample_objects(rng, rng.randint(min_objects, max_objects)),
                           n_letters=n_letters, with_mask=True)
        if ok(scene[1]):
            return scene
    raise RuntimeError("could not satisfy scene constraint")


def make_sample(rng: random.Random, task: str, size: int | None = None, max_objects: int = 5,
                n_images: int | None = None, with_mask: bool = False) -> dict:
    """One question about one scene (or 2-5 scenes for "haystack").

    Returns dict(images=[PIL], question, answer, task, objects=[objs per image], box=normalised answer box
    or None, meta=dict(targets=[[image, object index], ...] the question is about, negative=POPE kind, ...))
    and, with ``with_mask``, masks=[uint8 arrays].
    """
    meta: dict = {}
    box = None
    if task == "existence":
        img, objs, m = _scene_where(rng, size, lambda o: len(_pairs(o)) > 0, max_objects)
        present = _pairs(objs)
        if rng.random() < 0.5:
            (c, s), ans = rng.choice(present), "yes"
        else:
            meta["negative"] = rng.choice(NEG_KINDS)
            (c, s), ans = _negative(rng, present, meta["negative"]), "no"
        q = f"Is there a {c} {s}?"
        scenes = [(img, objs, m)]
    elif task == "colour":
        s = rng.choice(SHAPES)
        img, objs, m = _scene_where(rng, size, lambda o: [p[1] for p in _pairs(o)].count(s) == 1, max_objects)
        q, ans = f"What colour is the {s}?", next(p[0] for p in _pairs(objs) if p[1] == s)
        scenes = [(img, objs, m)]
    elif task == "shape":
        c = rng.choice(COLOURS)
        img, objs, m = _scene_where(rng, size, lambda o: [p[0] for p in _pairs(o)].count(c) == 1, max_objects)
        q, ans = f"What shape is the {c} object?", next(p[1] for p in _pairs(objs) if p[0] == c)
        scenes = [(img, objs, m)]
    elif task == "count":
        s = rng.choice(SHAPES)
        img, objs, m = _scene_where(rng, size, lambda o: len(o) > 0, max_objects)
        q, ans = f"How many {s}s are there?", str([p[1] for p in _pairs(objs)].count(s))
        scenes = [(img, objs, m)]
    elif task == "grounding":
        def unique(o):
            ps = _pairs(o)
            return any(ps.count(p) == 1 for p in ps)
        img, objs, m = _scene_where(rng, size, unique, max_objects)
        ps = _pairs(objs)
        c, s = rng.choice([p for p in ps if ps.count(p) == 1])
        obj = next(o for o in objs if o["kind"] == "shape" and (o["colour"], o["shape"]) == (c, s))
        box = [round(min(1.0, max(0.0, v)), 2) for v in obj["box"]]
        q, ans = f"Where is the {c} {s}?", format_box(box)
        scenes = [(img, objs, m)]
    elif task == "letter":
        img, objs, m = _scene_where(rng, size, lambda o: sum(x["kind"] == "letter" for x in o) == 1,
                                    max_objects, n_letters=1, min_objects=0)
        q, ans = "What letter is in the image?", next(o["letter"] for o in objs if o["kind"] == "letter").lower()
        scenes = [(img, objs, m)]
    elif task == "haystack":
        return _haystack(rng, size, max_objects, n_images, with_mask)
    else:
        raise ValueError(f"unknown task {task!r}")
    meta["targets"] = _targets(task, scenes[0][1], q)
    out = {"images": [sc[0] for sc in scenes], "question": q, "answer": ans, "task": task,
           "objects": [sc[1] for sc in scenes], "box": box, "meta": meta}
    if with_mask:
        out["masks"] = [sc[2] for sc in scenes]
    return out


def _targets(task: str, objs: list[dict], q: str) -> list[list[int]]:
    """[image index, object index] of the objects a question is about (what an answer must look at)."""
    words = q.rstrip("?").split()
    if task == "letter":
        return [[0, k] for k, o in enumerate(objs) if o["kind"] == "letter"]
    shapes = [(k, o) for k, o in enumerate(objs) if o["kind"] == "shape"]
    if task in ("existence", "grounding"):
        c, s = words[-2], words[-1]
        return [[0, k] for k, o in shapes if (o["colour"], o["shape"]) == (c, s)]
    if task == "colour":
        return [[0, k] for k, o in shapes if o["shape"] == words[-1]]
    if task == "shape":
        return [[0, k] for k, o in shapes if o["colour"] == words[-2]]
    if task == "count":
        return [[0, k] for k, o in shapes if o["shape"] + "s" == words[2]]
    return []


def _haystack(rng, size, max_objects, n_images, with_mask) -> dict:
    n = n_images or rng.randint(2, 5)
    anchor = sample_objects(rng, 1)[0]
    target = anchor
    while target == anchor:
        target = sample_objects(rng, 1)[0]
    yes = rng.random() < 0.5
    where = rng.randrange(n)
    scenes = []
    for i in range(n):
        want = [anchor] if i == where else []
        if i == where and yes:
            want.append(target)
        # The target may sit in another image as a distractor; the anchor never does.
        if i != where and not yes and rng.random() < 0.5:
            want.append(target)
        k = rng.randint(max(1, len(want)), max(max_objects, len(want)))
        forbid = {anchor} if i != where else ({target} if not yes else set())
        extra = [p for p in sample_objects(rng, 3 * k) if p not in forbid and p not in want][: k - len(want)]
        objs_in = want + extra
        rng.shuffle(objs_in)
        for _ in range(50):
            img, objs, m = make_scene(rng, size, objs_in, with_mask=True)
            if set(want) <= set(_pairs(objs)):
                break
        scenes.append((img, objs, m))
    (c, s), (c2, s2) = target, anchor
    out = {"images": [sc[0] for sc in scenes], "task": "haystack",
           "question": f"Is there a {c} {s} in the image with the {c2} {s2}?", "answer": "yes" if yes else "no",
           "objects": [sc[1] for sc in scenes], "box": None,
           "meta": {"n_images": n, "anchor_image": where,
                    "targets": [[where, k] for k, o in enumerate(scenes[where][1])
                                if o["kind"] == "shape" and (o["colour"], o["shape"]) in (anchor, target)]}}
    if with_mask:
        out["masks"] = [sc[2] for sc in scenes]
    return out


def all_answer_words() -> list[str]:
    """Every answer the world can ask for (single words; boxes are built from 0.00-1.00)."""
    return ["yes", "no", *COLOURS, *SHAPES, *"0123456789", *LETTERS.lower()]
