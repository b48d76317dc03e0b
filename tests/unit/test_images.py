"""Decoding: every supported format and mode becomes upright 8-bit RGB; every bad input is one typed error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgsearch.errors import BadImageError, ImageTooLargeError
from imgsearch.images import decode_image

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def picture(size=(64, 48)) -> Image.Image:
    """Left half red, right half blue: orientation and colour are both checkable."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:, : size[0] // 2] = (255, 0, 0)
    pixels[:, size[0] // 2:] = (0, 0, 255)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_supported_formats_decode_to_rgb(fmt):
    decoded = decode_image(encode(picture(), fmt), **LIMITS)
    assert decoded.image.mode == "RGB" and decoded.image.size == (64, 48)
    assert decoded.content_type.startswith("image/")
    left, right = np.asarray(decoded.image)[24, 5], np.asarray(decoded.image)[24, 58]
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(decode_image(data, **LIMITS).image)[8, 8]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(encode(picture((64, 48)), "JPEG", exif=exif.tobytes()), **LIMITS)
    assert decoded.image.size == (48, 64) and (decoded.width, decoded.height) == (48, 64)
    top, bottom = np.asarray(decoded.image)[3, 24], np.asarray(decoded.image)[60, 24]
    assert top[0] > 200 and bottom[2] > 200  # red (left) is now on top


def test_a_large_jpeg_decodes_smaller_but_keeps_its_size_and_the_local_features_side():
    data = encode(picture((3000, 1000)), "JPEG")
    drafted = decode_image(data, **LIMITS, draft_size=224)
    assert drafted.image.size == (1500, 500) and (drafted.width, drafted.height) == (3000, 1000)
    kept = decode_image(data, **LIMITS, draft_size=224, keep_long_side=2000)  # the longer side stays >= 2000
    assert kept.image.size == (3000, 1000) and (kept.width, kept.height) == (3000, 1000)


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode_image(encode(picture().convert("CMYK"), "JPEG"), **LIMITS)
    assert decoded.image.mode == "RGB" and np.asarray(decoded.image)[24, 5][0] > 200


def test_16_bit_grayscale_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(8, axis=0))  # (8, 64)
    decoded = decode_image(encode(Image.fromarray(ramp), "PNG"), **LIMITS)
    row = np.asarray(decoded.image)[4, :, 0]
    assert row[0] < 5 and 100 < row[32] < 160 and row[-1] > 250


def test_transparency_goes_onto_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert tuple(np.asarray(decode_image(encode(rgba, "PNG"), **LIMITS).image)[5, 5]) == (255, 255, 255)
    palette = Image.new("P", (10, 10), 0)
    palette.info["transparency"] = 0
    assert decode_image(encode(palette, "PNG", transparency=0), **LIMITS).image.mode == "RGB"


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, this is a text file\n", "not an image"),
    (encode(picture(), "JPEG")[:300], "truncated"),
    (encode(picture(), "PNG")[:60], "truncated|corrupt"),
])
def test_bad_bytes_are_bad_image_errors(data, message):
    with pytest.raises(BadImageError, match=message):
        decode_image(data, **LIMITS)


def test_unsupported_format_is_named():
    with pytest.raises(BadImageError, match="unsupported image format"):
        decode_image(encode(picture(), "PPM"), **LIMITS)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims huge dimensions: a decompression bomb's opening move."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_huge_dimensions_are_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(png_header_claiming(100_000, 100_000), **LIMITS)


def test_too_many_bytes_is_refused():
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(b"\xff" * 101, max_bytes=100, max_pixels=10)


def test_large_jpeg_is_drafted_but_keeps_enough_resolution():
    big = encode(picture((2000, 1600)), "JPEG")
    decoded = decode_image(big, max_bytes=10**8, max_pixels=10**8, draft_size=224)
    assert min(decoded.image.size) >= 448 and decoded.image.size[0] < 2000
