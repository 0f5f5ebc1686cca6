"""Image normalisation against expected pixels: EXIF 1-8, 16-bit, float, alpha, CMYK, palette, animation, bounds."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from explorer.images import normalise, open_image
from explorer.limits import InputError, Limits

STORED = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14  # 2 rows x 3 columns, every pixel distinct
# What a viewer shows for each EXIF orientation, from the EXIF spec's row/column wording (not from Pillow).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # row 0 is the left side, column 0 the top
    6: lambda a: np.rot90(a, -1),  # row 0 is the right side, column 0 the top: turn clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # row 0 is the right side, column 0 the bottom
    8: lambda a: np.rot90(a, 1),  # row 0 is the left side, column 0 the bottom: turn anticlockwise
}


def save_with_orientation(path, pixels: np.ndarray, orientation: int, fmt: str = "PNG"):
    img = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, fmt, exif=exif.tobytes(), **({"quality": 98, "subsampling": 0} if fmt == "JPEG" else {}))
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_upright_picture(tmp_path, orientation):
    path = save_with_orientation(tmp_path / f"o{orientation}.png", STORED, orientation)
    got = np.asarray(open_image(path))
    np.testing.assert_array_equal(got, UPRIGHT[orientation](STORED))


def test_phone_jpeg_orientation_6_reaches_the_model_upright(tmp_path):
    blocks = np.kron(STORED, np.ones((16, 16, 1), dtype=np.uint8))  # 32 x 48, flat 16-px cells survive JPEG
    path = save_with_orientation(tmp_path / "phone.jpg", blocks, 6, "JPEG")
    got = open_image(path)
    assert got.size == (32, 48)  # portrait, as the browser shows it
    expected = UPRIGHT[6](blocks).astype(int)
    assert np.abs(np.asarray(got).astype(int) - expected)[4:-4, 4:-4].max() <= 6


def test_normalise_is_idempotent(tmp_path):
    once = open_image(save_with_orientation(tmp_path / "o6.png", STORED, 6))
    twice = normalise(once)
    assert twice.mode == "RGB" and np.array_equal(np.asarray(once), np.asarray(twice))


def grey(img) -> np.ndarray:
    rgb = np.asarray(normalise(img)).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(256, dtype=np.uint16) * 257)[None].repeat(16, 0)  # full 16-bit range
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as img:
        assert img.mode in ("I;16", "I")
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "ramp16.png"))[..., 0], ramp // 257)


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_wide_integer_modes(mode, dtype):
    values = np.array([[0, 257, 32896, 65535]] * 2, dtype=dtype)
    img = Image.frombytes(mode, (4, 2), values.tobytes())
    np.testing.assert_array_equal(grey(img)[0], [0, 1, 128, 255])


def test_mode_i_beyond_16_bits_is_min_max_scaled():
    values = np.array([[-1000, 0, 99000, 199000]] * 2, dtype="<i4")
    np.testing.assert_array_equal(grey(Image.frombytes("I", (4, 2), values.tobytes()))[0], [0, 1, 128, 255])


def test_float_tiff_in_unit_range(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]] * 2, dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "f.tif"))[0, :, 0], [0, 64, 128, 255])


def test_float_outside_unit_range_is_min_max_scaled_and_nan_is_black():
    values = np.array([[-2.0, 0.0, 2.0, np.nan]] * 2, dtype=np.float32)
    np.testing.assert_array_equal(grey(Image.fromarray(values, "F"))[0], [0, 128, 255, 0])


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]] * 2, dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    got = np.asarray(open_image(tmp_path / "a.png")).astype(int)[0]
    assert got[0].tolist() == [255, 255, 255] and got[1].tolist() == [0, 0, 255]
    assert np.abs(got[2] - 127).max() <= 1


def test_grey_with_alpha_is_composited_on_white():
    img = Image.fromarray(np.array([[[0, 0], [0, 255]]] * 2, dtype=np.uint8), "LA")
    assert grey(img)[0].tolist() == [255, 0]


def test_cmyk_is_converted(tmp_path):
    pixels = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]] * 2, dtype=np.uint8)
    Image.fromarray(pixels, "CMYK").save(tmp_path / "c.tif")
    got = np.asarray(open_image(tmp_path / "c.tif"))[0].tolist()
    assert got == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (3, 2))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 0] + [0] * 759)
    img.putdata([0, 1, 2] * 2)
    img.save(tmp_path / "p.png", transparency=2)
    assert np.asarray(open_image(tmp_path / "p.png"))[0].tolist() == [[255, 0, 0], [0, 255, 0], [255, 255, 255]]


def test_animated_gif_takes_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(tmp_path / "anim.gif") as img:
        assert img.n_frames == 3
        img.seek(2)  # even when the caller left it on a later frame
        assert set(map(tuple, np.asarray(normalise(img)).reshape(-1, 3))) == {(255, 0, 0)}
    assert set(map(tuple, np.asarray(open_image(tmp_path / "anim.gif")).reshape(-1, 3))) == {(255, 0, 0)}


def test_thin_png_is_refused_for_its_aspect_ratio(tmp_path):
    Image.new("L", (2, 20000)).save(tmp_path / "thin.png")
    assert (tmp_path / "thin.png").stat().st_size < 2000
    with pytest.raises(InputError, match="too elongated") as err:
        open_image(tmp_path / "thin.png")
    assert "\n" not in str(err.value) and str(tmp_path) not in str(err.value)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixel data: only a header check can judge it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_pixel_bound_is_checked_from_the_header_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    with pytest.raises(InputError, match="too large"):
        open_image(tmp_path / "bomb.png")
    with pytest.raises(InputError, match="too large"):
        open_image(png_header_only(7000, 7000))  # between our bound and Pillow's 2x


@pytest.mark.parametrize("size, message", [((1, 50), "too small"), ((300, 10), "too elongated")])
def test_named_bounds_apply(size, message):
    with pytest.raises(InputError, match=message):
        normalise(Image.new("RGB", size), Limits(max_aspect=10))
    assert normalise(Image.new("RGB", (300, 30)), Limits(max_aspect=10)).size == (300, 30)


def test_errors_name_the_file_not_its_server_path(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    for source in (tmp_path / "notes.png", tmp_path / "missing.png"):
        with pytest.raises(InputError) as err:
            open_image(source)
        assert str(tmp_path) not in str(err.value) and source.name in str(err.value)
