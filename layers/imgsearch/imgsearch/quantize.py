"""Build the int8 OpenVINO model of the VGG19 trunk from the weights file (`imgsearch build-model`).

Keras trunk (networks.load_vgg19) -> SavedModel -> OpenVINO (dynamic input size kept) -> NNCF post-training
quantisation, calibrated on real photos preprocessed at the sizes the embedder uses. A build step (scripts/setup,
the Dockerfile), never run on a request: it needs TensorFlow and NNCF (`pip install 'imgsearch[build]'`) and
a minute or two. The result is an artefact made from the weights: never commit it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, PermanentError

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 48  # more changes nothing measurable (docs/benchmarks.md) and costs ~1.5 s each
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def calibration_images(folders: Sequence[Path], limit: int = CALIBRATION_IMAGES) -> list[Path]:
    """Up to `limit` images from the folders, spread evenly over each folder's sorted files."""
    found = []
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        found += files
    if not found:
        raise ConfigError(f"no calibration images in {', '.join(map(str, folders))}: the int8 model is calibrated "
                          "on real photos like the ones you will index (a few dozen are enough)")
    step = max(1, len(found) // limit)
    return found[::step][:limit]


def build_int8_model(weights: str | None, calibration: Sequence[Path], out: Path) -> Path:
    """Write out (.xml + .bin) and return its path."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise ConfigError("building the int8 model needs OpenVINO and NNCF: pip install 'imgsearch[build]'") from None
    from .embedder import DOCUMENT_SIZES, QUERY_SIZES, Embedder
    from .images import decode_image
    from .networks import load_vgg19

    sizes = [*DOCUMENT_SIZES, *QUERY_SIZES]
    batches = []
    for i, path in enumerate(calibration):
        try:
            image = decode_image(path.read_bytes(), max_bytes=1 << 28, max_pixels=1 << 28, draft_size=224).image
        except PermanentError as exc:
            log.warning("calibration image %s skipped: %s", path.name, exc)
            continue
        batches.append(Embedder.preprocess(image, sizes[i % len(sizes)])[None])  # (1, h, w, 3)
    model = load_vgg19(weights)
    with tempfile.TemporaryDirectory(prefix="imgsearch-vgg19-") as scratch:
        model.export(scratch, format="tf_saved_model", verbose=False)
        fp32 = ov.convert_model(scratch)  # input (?, ?, ?, 3): any batch and size
    int8 = nncf.quantize(fp32, nncf.Dataset(batches), subset_size=len(batches))
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(int8, str(out))
    return out


def check_agreement(weights: str | None, model: Path, images: Sequence[Path]) -> float:
    """The lowest cosine between the int8 and the fp32 document vectors of the images (the numerics gate)."""
    from .embedder import Embedder
    from .images import decode_image

    decoded = [decode_image(p.read_bytes(), max_bytes=1 << 28, max_pixels=1 << 28, draft_size=224).image
               for p in images]
    fp32 = Embedder(weights, precision="fp32").embed(decoded)  # (n, 512)
    int8 = Embedder(weights, precision="int8", int8_model=model).embed(decoded)  # (n, 512)
    return float(np.min(np.sum(fp32 * int8, axis=1)))
