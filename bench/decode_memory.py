"""Decoding hostile input: the peak memory of `imgsearch.images.decode_image` on every case of the bad-input
corpus (tests/badinput/corpus.py), and on images just under the pixel limit in the costliest modes, each decoded
once in a fresh process.

    .venv/bin/python bench/decode_memory.py [--corpus-only]

Per case, in a child process: the bytes are read and a 64x64 PNG and JPEG decoded first (imports, plugins), then
the case is decoded with the limits and draft size the ingest and search paths use (Settings' defaults,
draft_size=224). Reported: the growth of the child's peak resident set (VmHWM, reset just before the decode)
over its resident set then, which counts Pillow's C buffers; and tracemalloc's peak, which counts only Python and numpy
allocations (Pillow's image memory is invisible to it). Writes bench/results/decode_memory.json and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

from common import REPO, load, machine, table, write_json

sys.path.insert(0, str(REPO / "tests"))
LIMIT_SIDE = 7071  # 7071 x 7071 = 49 999 041 pixels: just under IMGSEARCH_MAX_PIXELS' default (50 000 000)


def child(path: str) -> None:
    """Decode one file; print what it cost as JSON."""
    import io

    from PIL import Image

    from imgsearch.config import Settings
    from imgsearch.errors import ImgSearchError
    from imgsearch.images import decode_image

    settings = Settings()
    limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_pixels, "draft_size": 224}
    for fmt in ("PNG", "JPEG"):  # warm up: plugins imported, decoders initialised
        out = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 200, 30)).save(out, format=fmt)
        decode_image(out.getvalue(), **limits)
    data = Path(path).read_bytes()
    before = _reset_peak()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        decoded = decode_image(data, **limits)
        outcome = f"decoded {decoded.width}x{decoded.height}"
    except ImgSearchError as exc:
        outcome = f"{type(exc).__name__}"
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1]
    after = _status_kib("VmHWM")
    print(json.dumps({"baseline_kib": before, "rss_growth_kib": after - before, "traced_peak_bytes": traced,
                      "seconds": round(seconds, 3), "outcome": outcome, "bytes": len(data)}))


def _status_kib(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))


def _reset_peak() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS and return that, in KiB. (ru_maxrss would not do:
    Linux carries it over from the parent across fork and exec.)"""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # "reset the peak resident set size", Linux >= 4.0
    return _status_kib("VmHWM")


# -- images at the limit, written row by row (no big buffer in this process) -------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def flat_png(width: int, height: int, colour_type: int, bit_depth: int, extra: bytes = b"") -> bytes:
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)  # filter "none" and the pixels, all zero
    compressor = zlib.compressobj(6)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_at_the_limit(mode: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    from badinput.corpus import picture

    # A picture tiled over the whole frame: not a flat colour, and a file under the byte limit (20 MiB).
    tile = np.asarray(picture(1, (512, 512)).convert(mode))
    pixels = np.tile(tile, (LIMIT_SIDE // 512 + 1, LIMIT_SIDE // 512 + 1, 1))[:LIMIT_SIDE, :LIMIT_SIDE]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode).save(out, format="JPEG", quality=75)
    return out.getvalue()


def limit_cases() -> list[tuple[str, str, bytes]]:
    """(name, what, bytes): accepted images as large as the pixel limit allows, in the modes that cost most."""
    side = LIMIT_SIDE
    palette = _chunk(b"PLTE", b"\x00\x00\x00") + _chunk(b"tRNS", b"\x00")
    return [
        ("limit_rgb_png", "7071² RGB PNG", flat_png(side, side, 2, 8)),
        ("limit_rgba_png", "7071² RGBA PNG (composed onto white)", flat_png(side, side, 6, 8)),
        ("limit_palette_alpha_png", "7071² palette PNG with a transparent colour", flat_png(side, side, 3, 8, palette)),
        ("limit_16bit_png", "7071² 16-bit grayscale PNG (scaled to 8 bits)", flat_png(side, side, 0, 16)),
        ("limit_rgb_jpeg", "7071² RGB JPEG (drafted to ≥ 448 px)", jpeg_at_the_limit("RGB")),
        ("limit_cmyk_jpeg", "7071² CMYK JPEG (drafted)", jpeg_at_the_limit("CMYK")),
    ]


def measure(path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        return {"outcome": f"child failed ({result.returncode}): {result.stderr.strip().splitlines()[-1:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def mib(kib_or_bytes: float, unit: int) -> str:
    return f"{kib_or_bytes * unit / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus-only", action="store_true", help="skip the images at the pixel limit")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from badinput import corpus

    started_load = load()
    cases = [(c.name, c.outcome + (f" ({c.error})" if c.error else ""), c.data) for c in corpus.cases()]
    if not args.corpus_only:
        cases += [(name, f"indexed: {what}", data) for name, what, data in limit_cases()]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name, expected, data in cases:
            path = Path(folder) / name
            path.write_bytes(data)
            measured = {"case": name, "expected": expected, **measure(path)}
            path.unlink()
            results.append(measured)
            print(json.dumps(measured), file=sys.stderr)
            rows.append([f"`{name}`", f"{len(data):,}", measured["outcome"],
                         mib(measured.get("rss_growth_kib", float("nan")), 1024),
                         mib(measured.get("traced_peak_bytes", float("nan")), 1),
                         f"{measured.get('seconds', float('nan')):.2f}"])
    info = {**machine(), "loadavg_before": started_load, "loadavg_after": load(),
            "date": time.strftime("%Y-%m-%d"), "baseline_kib": results[0].get("baseline_kib")}
    write_json("decode_memory.json", {"machine": info, "cases": results})
    print(f"{info['cpu']}, nproc {info['nproc']}, {info['mem_gib']} GiB, Python {info['python']}, "
          f"load {info['loadavg_before']} -> {info['loadavg_after']}, {info['date']}; child baseline "
          f"{mib(info['baseline_kib'], 1024)} MiB RSS before the decode")
    print(table(["case", "bytes", "decode_image", "peak RSS growth MiB", "tracemalloc peak MiB", "s"], rows))


if __name__ == "__main__":
    main()
