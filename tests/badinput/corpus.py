"""The bad-input corpus (issue 14, item 7): hostile and odd files and keys, generated here, never committed.

Every case says what each entry must do with it (tests/badinput/test_*.py check it; bench/decode_memory.py
measures its decode):
- "indexed": a valid image. The upload API answers 200 and finds it; a bucket event indexes it; `imgsearch
  index` indexes it.
- "rejected": the upload API answers `status` with a JSON {"message", "code"} whose message matches `reason`;
  a bucket event parks it in the dead-letter queue at once, with the core's error class (`error`, the letter's
  "error" attribute) and a "reason" attribute matching `reason`; `imgsearch index` lists it under "failed"
  with that reason and indexes the rest.
The limits the cases aim at are the defaults of imgsearch.config.Settings (max_pixels 50 000 000, max_image_bytes
20 MiB) and Pillow's own bomb check (Image.MAX_IMAGE_PIXELS, 89 478 485 pixels: a warning above it, which
decode_image turns into an error, and an error above twice that).

`python tests/badinput/corpus.py OUT_DIR` writes the files (under their keys) and a manifest.json. Pillow,
numpy and the standard library only.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

INDEXED, REJECTED = "indexed", "rejected"
PROJECT_MAX_PIXELS = 50_000_000  # imgsearch.config.Settings.max_pixels' default
PILLOW_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS' default
BOMB_SIDE = 8_000  # 64 000 000 pixels: over the project's limit, under Pillow's, so the project's check runs
MAX_KEY_BYTES = 1024  # S3's limit on a key (imgsearch.storage.MAX_KEY_BYTES)

FIXED_TIME = time.gmtime(1_767_225_600)  # 2026-01-01, in the PDF: the corpus is the same bytes every time

assert PROJECT_MAX_PIXELS < BOMB_SIDE ** 2 < PILLOW_MAX_PIXELS


@dataclass(frozen=True)
class Case:
    """One file of the corpus and what every entry must make of it."""

    name: str
    key: str  # the file or object name it is stored under (its extension may lie: decoding goes by content)
    data: bytes
    outcome: str  # INDEXED or REJECTED
    why: str  # what the case is, and why this outcome is the right one
    status: int | None = None  # rejected: the HTTP status of POST /search
    error: str | None = None  # rejected: the core's error class (the dead letter's "error" attribute)
    reason: str | None = None  # rejected: a regular expression the API message and the dead letter's reason match
    content_type: str | None = None  # indexed: the content type the index records (from the bytes, not the name)
    size: tuple[int, int] | None = None  # indexed: (width, height) the index records, EXIF orientation applied

    def manifest(self) -> dict:
        entry = {k: v for k, v in asdict(self).items() if k != "data" and v is not None}
        return {**entry, "bytes": len(self.data)}


@dataclass(frozen=True)
class KeyCase:
    """An odd key under which a valid image is stored (or would be, if a key could be that)."""

    name: str
    key: str
    outcome: str  # INDEXED: stored and found under exactly this key; REJECTED: no entry accepts the key
    why: str
    reason: str | None = None  # rejected: a regular expression the reason matches

    def manifest(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if v is not None},
                "key_bytes": len(self.key.encode("utf-8"))}


# -- pictures --------------------------------------------------------------------------------------------------
def picture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A distinct RGB picture per seed: a colour gradient under random ellipses, rectangles and lines, enough
    texture for the network and for SIFT, and different enough that each case finds itself first."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.integers(-120, 120, 3)  # (1, w, 3)
    pixels = np.clip(base + ramp + np.zeros((h, 1, 1), np.float32), 0, 255).astype(np.uint8)  # (h, w, 3)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0))
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour, outline=(255, 255, 255))
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 7)))
    return image


def noise(seed: int, size: tuple[int, int]) -> Image.Image:
    """Random RGB pixels, for shapes too thin to draw on."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width x height, all black: a few KB that would decode to width*height
    pixels (3 bytes each once in RGB)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (8-bit RGB) over a few bytes of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def heic_without_codec(brand: bytes = b"heic") -> bytes:
    """The start of an HEIF file as iPhones write it (ftyp major brand "heic"), an HEVC item Pillow has no
    codec for: ftyp, then a meta box with a handler and an item of type hvc1, then the coded bytes."""
    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body
    ftyp = box(b"ftyp", brand + b"\x00\x00\x00\x00" + b"mif1heicmiaf")
    hdlr = box(b"hdlr", b"\x00" * 4 + b"\x00" * 4 + b"pict" + b"\x00" * 12 + b"\x00")
    infe = box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH", 1, 0) + b"hvc1" + b"\x00")
    iinf = box(b"iinf", b"\x00" * 4 + struct.pack(">H", 1) + infe)
    meta = box(b"meta", b"\x00" * 4 + hdlr + iinf)
    mdat = box(b"mdat", bytes(np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8)))
    return ftyp + meta + mdat


def zip_archive() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        entry = zipfile.ZipInfo("payload/readme.html", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(entry, "<script>alert(document.domain)</script>", zipfile.ZIP_DEFLATED)
    return out.getvalue()


def gif_js_polyglot() -> bytes:
    """A GIF that is also valid JavaScript: the logical screen width's two bytes are '/*', opening a comment
    that the bytes after the GIF trailer close; then a statement. Width 0x2A2F = 10799 px, height 600."""
    frame = encode(picture(31, (240, 180)).quantize(64), "GIF")
    assert frame[:6] == b"GIF89a" or frame[:6] == b"GIF87a"
    body = b"GIF89a" + b"/*" + struct.pack("<H", 600) + frame[10:]
    body = body.replace(b"*/", b"*\x00")  # no early end of the comment inside the binary part (palette/LZW)
    return body + b"*/=1;alert(document.domain);//"


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[:max(16, int(len(data) * fraction))]


def long_key(n_bytes: int) -> str:
    """A key of exactly n_bytes of UTF-8, mostly two-byte characters (so bytes, not characters, are counted),
    in path segments of at most 200 bytes (so a folder can hold it: file names stop at 255 bytes)."""
    segments, size = [], 0
    while n_bytes - size > 210:
        segments.append("é" * 100)  # 200 bytes
        size += 201  # and its "/"
    tail = n_bytes - size - len(".jpg")
    segments.append("k" * tail + ".jpg")
    key = "/".join(segments)
    assert len(key.encode("utf-8")) == n_bytes
    return key


# -- the corpus ------------------------------------------------------------------------------------------------
def cases() -> list[Case]:
    """Every file case, bad and good, with its expected outcome."""
    jpeg = encode(picture(1), "JPEG", quality=90)
    png = encode(picture(2), "PNG")
    gif = encode(picture(3).quantize(64), "GIF")
    webp = encode(picture(4), "WEBP", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    frames = [picture(13 + i, (160, 120)).quantize(64) for i in range(3)]
    palette = picture(12, (200, 150)).quantize(32)
    pixels16 = (np.asarray(picture(11).convert("L"), np.uint16) * 257)  # (240, 320) full 16-bit range
    polyglot_jpeg = encode(picture(20), "JPEG", quality=90)
    bad_image, too_large = "BadImageError", "ImageTooLargeError"
    return [
        Case("zero_bytes", "empty.jpg", b"", REJECTED,
             "an empty object (a failed upload): nothing to decode", 400, bad_image, r"empty"),
        Case("truncated_jpeg", "truncated.jpg", truncated(jpeg), REJECTED,
             "half a JPEG: Pillow would fill the rest with grey if LOAD_TRUNCATED_IMAGES were on; it is not",
             415, bad_image, r"truncated"),
        Case("truncated_png", "truncated.png", truncated(png), REJECTED,
             "half a PNG: the IDAT stream ends early", 415, bad_image, r"truncated|corrupt"),
        Case("truncated_gif", "truncated.gif", truncated(gif), REJECTED,
             "half a GIF: the LZW data ends early", 415, bad_image, r"truncated|corrupt"),
        Case("truncated_webp", "truncated.webp", truncated(webp), REJECTED,
             "half a WebP: the VP8 frame ends early", 415, bad_image, r"truncated|corrupt|not an image"),
        Case("png_named_jpg", "png-bytes.jpg", encode(picture(5), "PNG"), INDEXED,
             "PNG bytes under a .jpg name: the format is sniffed from the bytes, never the name",
             content_type="image/png", size=(320, 240)),
        Case("decompression_bomb", "bomb.png", png_bomb(BOMB_SIDE, BOMB_SIDE), REJECTED,
             f"a {BOMB_SIDE}x{BOMB_SIDE} 1-bit PNG of a few KB: over IMGSEARCH_MAX_PIXELS, under Pillow's own "
             "limit, so the project's check refuses it before any pixel is decoded",
             413, too_large, r"pixels; the limit is"),
        Case("bomb_over_pillow_limit", "huge-header.png", png_header_only(100_000, 100_000), REJECTED,
             "a PNG header claiming 100000x100000 over a few bytes: refused on the header", 413, too_large,
             r"pixels|too large"),
        Case("one_by_one", "1x1.png", encode(Image.new("RGB", (1, 1), (200, 40, 90)), "PNG"), INDEXED,
             "a valid image of one pixel: tiny but decodable; the network sees it as one flat colour",
             content_type="image/png", size=(1, 1)),
        Case("strip_100000x1", "strip.png", encode(noise(6, (100_000, 1)), "PNG"), REJECTED,
             "a 100000x1 strip: valid PNG, 100 000 pixels, but no side can be scaled for the network or the "
             "local features without vanishing; refused as too thin, not crashed on",
             415, bad_image, r"too thin|aspect"),
        Case("cmyk_jpeg", "cmyk.jpg", encode(picture(7).convert("CMYK"), "JPEG", quality=90), INDEXED,
             "a CMYK JPEG (print workflows): converted to RGB", content_type="image/jpeg", size=(320, 240)),
        Case("png_16bit", "gray16.png", encode(Image.fromarray(pixels16), "PNG"), INDEXED,
             "a 16-bit grayscale PNG: scaled to 8 bits, not clipped to white",
             content_type="image/png", size=(320, 240)),
        Case("palette_alpha_png", "palette-alpha.png", encode(palette, "PNG", transparency=0), INDEXED,
             "a palette PNG with a transparent colour: composed onto white", content_type="image/png",
             size=(200, 150)),
        Case("animated_gif", "animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                                    duration=100, loop=0), INDEXED,
             "a 3-frame animated GIF: the first frame is the image", content_type="image/gif", size=(160, 120)),
        Case("exif_rotated_jpeg", "rotated.jpg", encode(picture(8, (320, 240)), "JPEG", exif=exif.tobytes()),
             INDEXED, "a 320x240 JPEG whose EXIF says 'rotate 90°': indexed upright, 240x320",
             content_type="image/jpeg", size=(240, 320)),
        Case("svg", "drawing.svg",
             b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
             b'<script>alert(1)</script><circle cx="50" cy="50" r="40" fill="red"/></svg>', REJECTED,
             "SVG is a document (it can carry script), not a raster we decode", 415, bad_image, r"not an image"),
        Case("pdf", "scan.pdf", encode(picture(9), "PDF", creationDate=FIXED_TIME, modDate=FIXED_TIME), REJECTED,
             "a PDF holding a JPEG: Pillow writes PDFs but does not read them", 415, bad_image, r"not an image"),
        Case("heic_without_codec", "IMG_0001.HEIC", heic_without_codec(), REJECTED,
             "an HEIF/HEIC file (ftyp 'heic'): no HEVC codec is installed, so it is no supported format",
             415, bad_image, r"not an image|unsupported"),
        Case("avif_brand_no_image", "photo.avif", heic_without_codec(b"avif"), REJECTED,
             "the same HEIF body under an 'avif' brand: Pillow's AVIF plugin opens it and fails with a "
             "RuntimeError (a 500 and a retried event before issue 14 item 7)", 415, bad_image,
             r"corrupt|not an image"),
        Case("jpeg_zip_polyglot", "jpeg-zip.jpg", polyglot_jpeg + zip_archive(), INDEXED,
             "a JPEG with a ZIP archive appended: the image part is valid and is what is indexed; the bytes "
             "are served back only as image/jpeg with nosniff", content_type="image/jpeg", size=(320, 240)),
        Case("jpeg_html_polyglot", "jpeg-html.jpg",
             encode(picture(21), "JPEG", quality=90) + b"<html><script>alert(document.domain)</script></html>",
             INDEXED, "a JPEG with HTML appended: indexed as the JPEG it starts with; served as image/jpeg, "
             "nosniff", content_type="image/jpeg", size=(320, 240)),
        Case("gif_js_polyglot", "gif-js.gif", gif_js_polyglot(), INDEXED,
             "a GIF that is also JavaScript ('GIF89a/*...*/=1;alert(...)'): a valid 10799x600 GIF; served as "
             "image/gif with nosniff, never as script", content_type="image/gif", size=(10799, 600)),
        Case("html_then_jpeg", "html-jpeg.jpg",
             b"<!doctype html><script>alert(1)</script>" + encode(picture(22), "JPEG"), REJECTED,
             "HTML with a JPEG appended: the bytes start as no image format", 415, bad_image, r"not an image"),
    ]


def key_cases() -> list[KeyCase]:
    """Odd keys. The valid ones hold a valid image and must round-trip exactly; the others no entry accepts."""
    key_rule = r"1 to 1024 bytes"
    return [
        KeyCase("percent", "odd/100% real %41 %zz.jpg", INDEXED,
                "'%' and things that look like escapes: stored and found as written, decoded once only"),
        KeyCase("plus", "odd/a+b=c+.jpg", INDEXED, "'+': S3 events write a space as '+' and '+' as '%2B'"),
        KeyCase("spaces", "odd/ two  spaces and a tab\t.jpg", INDEXED, "spaces, doubled, and a tab"),
        KeyCase("unicode", "odd/été/東京 🐱 Ünïcödé.jpg", INDEXED, "non-ASCII, including a 4-byte emoji"),
        KeyCase("key_1024_bytes", long_key(MAX_KEY_BYTES), INDEXED,
                "exactly 1024 bytes of UTF-8 (about 520 characters): S3's limit, accepted"),
        KeyCase("key_1025_bytes", long_key(MAX_KEY_BYTES + 1), REJECTED,
                "1025 bytes: one over S3's limit; S3 itself refuses it, a forged event or a file can carry it",
                key_rule),
        KeyCase("nul", "odd/nul\x00byte.jpg", REJECTED,
                "a NUL: no S3 object and no file name can hold one; only a forged event or request can", key_rule),
    ]


def key_image(case: KeyCase) -> bytes:
    """The valid image stored under a key case (distinct per case)."""
    return encode(picture(100 + [c.name for c in key_cases()].index(case.name), (200, 150)), "JPEG", quality=90)


def write(folder: Path, *, files: bool = True, keys: bool = True) -> dict:
    """Write the corpus into folder under its keys (the key cases no file name can hold are left out, and
    listed as such) and return the manifest."""
    manifest = {"cases": [], "key_cases": []}
    for case in cases() if files else []:
        (folder / case.key).write_bytes(case.data)
        manifest["cases"].append(case.manifest())
    for case in key_cases() if keys else []:
        entry = case.manifest()
        if "\x00" in case.key:
            entry["written"] = False  # no file name can hold a NUL
        else:
            path = folder / case.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(key_image(case))
            entry["written"] = True
        manifest["key_cases"].append(entry)
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/badinput/corpus.py OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    written = write(out)
    (out / "manifest.json").write_text(json.dumps(written, ensure_ascii=False, indent=2))
    print(f"{len(written['cases'])} files and {len(written['key_cases'])} keys written to {out}")
