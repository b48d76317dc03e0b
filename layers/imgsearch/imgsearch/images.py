"""Decoding untrusted image bytes into RGB pixels, with limits.

Every failure is one typed error with a message a user can act on; nothing here returns a blank image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError, ImageTooLargeError

# Formats we accept; MPO is what many phones write for JPEG.
SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
CONTENT_TYPES = {
    "JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
    "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff",
}
# The longer side may be at most this many times the shorter. Past 1280:1 the local features' view of an image
# (longer side 640 px, local_features.MAX_SIDE) would be 0 px wide, and nothing that thin is a picture to search.
MAX_ASPECT_RATIO = 1000


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # mode "RGB", EXIF orientation applied; a JPEG may be decoded smaller (draft_size)
    format: str
    content_type: str
    size: tuple[int, int]  # the file's own (width, height), upright: what a user sees and what a document records

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, draft_size: int | None = None,
                 keep_long_side: int = 0) -> DecodedImage:
    """Decode bytes to an upright RGB image, or raise BadImageError / ImageTooLargeError.

    draft_size lets JPEG decoding skip resolution that is never used: the decoder may shrink by a power of
    two while both sides stay at least twice draft_size, so later resizing still sees every detail it needs,
    and the longer side at least keep_long_side (local features are found at that size: their frame is then
    the file's, scaled, whatever the decoder skipped).
    """
    if not data:
        raise BadImageError("empty file: 0 bytes")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"file is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in SUPPORTED_FORMATS:
                raise BadImageError(
                    f"unsupported image format {image.format}; use one of {', '.join(sorted(SUPPORTED_FORMATS))}")
            width, height = image.size
            if width <= 0 or height <= 0:
                raise BadImageError(f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                raise BadImageError(f"image is {width}x{height}: too thin to search (the longer side may be at "
                                    f"most {MAX_ASPECT_RATIO} times the shorter)")
            fmt = image.format
            if draft_size and fmt in ("JPEG", "MPO"):
                long, short = max(2 * draft_size, keep_long_side), 2 * draft_size
                image.draft("RGB", (long, short) if width >= height else (short, long))
            image.load()
            stored = image.size
            ImageOps.exif_transpose(image, in_place=True)  # not a copy of every image (bench/decode_memory.py)
            upright = (width, height) if image.size == stored else (height, width)  # turned by 90 degrees
            rgb = to_rgb(image)
    except (ImageTooLargeError, BadImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise BadImageError("not an image: the bytes match no supported image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError with its own wording (its AVIF
        # plugin, which opens any "ftypavif" file before the format check, as RuntimeError).
        raise BadImageError(f"corrupt or truncated image: {exc}") from None
    return DecodedImage(image=rgb, format=fmt, content_type=CONTENT_TYPES[fmt], size=upright)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency onto white, 16/32-bit scaled, CMYK/P/L converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own I;16 -> RGB conversion clips at 255 instead of scaling, which turns most photos white.
    # One float32 copy, scaled in place: 16-bit values are exact in float32, and a 16-bit image at the pixel limit
    # costs about 4 bytes per pixel here instead of 24 (docs/benchmarks.md, "Decoding hostile input").
    values = np.array(image, dtype=np.float32)  # (h, w), a writable copy
    if image.mode == "F":
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        values -= low
        values *= 255.0 / (high - low or 1.0)
    elif values.max(initial=0) > 255:
        values /= 257.0
    np.nan_to_num(values, copy=False)
    gray = np.clip(values, 0, 255, out=values).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")  # 2-D uint8 is mode "L"
