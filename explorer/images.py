"""One image normalisation for every entry point: the model sees the picture a person sees.

`open_image` checks the size from the header before decoding; `normalise` (idempotent) takes the first
frame, applies EXIF orientation, scales 16-bit and float modes to 8 bits, composites alpha on white and
converts palette/CMYK/grey to RGB, bounding pixels and aspect ratio.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .limits import InputError, Limits

WIDE_INT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def check_size(width: int, height: int, limits: Limits) -> None:
    """Refuse too many pixels, a too-short side, or too extreme an aspect ratio (one line)."""
    if width < limits.min_side or height < limits.min_side:
        raise InputError(f"The image is too small ({width}x{height}); each side needs at least "
                         f"{limits.min_side} pixels.")
    if width * height > limits.max_pixels:
        raise InputError(f"The image is too large ({width}x{height}); the limit is "
                         f"{limits.max_pixels / 1e6:g} megapixels.")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise InputError(f"The image is too elongated ({width}x{height}); the longest side may be at most "
                         f"{limits.max_aspect:g} times the shortest.")


def normalise(image, limits: Limits | None = None) -> Image.Image:
    """An 8-bit RGB picture, upright, first frame, alpha on white; the same input gives the same output."""
    limits = limits or Limits()
    if not isinstance(image, Image.Image):
        raise InputError("That is not an image.")
    check_size(*image.size, limits)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
        pass
    if image.mode in WIDE_INT or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError):
        raise InputError(f"Images in colour mode {image.mode} are not supported; save it as RGB.") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit integer and float pixels scaled (not clipped) to 0-255 grey.

    16-bit modes divide by 257 (65535 -> 255); mode I in [0, 65535] is taken as 16-bit; mode F in [0, 1]
    multiplies by 255; anything else is min-max scaled.
    """
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def open_image(source, limits: Limits | None = None, name: str | None = None) -> Image.Image:
    """Open a path or bytes, refusing oversized images from the header before decoding; normalised RGB.

    Messages name the file by `name` (default: its base name), never by its server path.
    """
    limits = limits or Limits()
    data = source if isinstance(source, (bytes, bytearray)) else None
    if data is None:
        if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file():
            raise InputError(f"Image not found: {name or _base(source)}")
        name = name or Path(source).name
    name = name or "the image"
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # a backstop; the header check below comes first
    try:
        with warnings.catch_warnings():  # Pillow warns above max_pixels; check_size refuses just after
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data) if data is not None else source)
        with img:
            check_size(*img.size, limits)  # header only: nothing decoded yet
            img.load()
            return normalise(img, limits)
    except InputError:
        raise
    except Image.DecompressionBombError:  # Pillow's own header check fired first
        raise InputError(f"{name} is too large; the limit is {limits.max_pixels / 1e6:g} megapixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{name} is not a readable image ({type(exc).__name__}).") from None


def _base(source) -> str:
    try:
        return Path(source).name or "the image"
    except TypeError:
        return "the image"
