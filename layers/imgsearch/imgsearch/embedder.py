"""VGG19 global descriptors: one Embedder per process, shared by ingest and search.

Every vector comes from VGG19's last convolution (block5_conv4, ImageNet weights) on RGB input with Keras'
"caffe" preprocessing (the demo fed OpenCV's BGR by mistake), pooled by R-MAC (Tolias et al. 2016): the maximum
of each of a set of overlapping square regions, each L2-normalised. The network runs on OpenVINO int8 or
TensorFlow fp32 (networks.py); both give the same vectors to cosine >= 0.99.

- A document is looked at once, squashed to 224x224: its regions summed give the raw vector. The stored vector
  is the raw one PCA-whitened with the index's whitening (whitening.py); the raw vector and the regions are
  kept so a refit needs no network.
- A query is described like a document (so an indexed image still finds itself at 1.0) and looked at once more,
  closer (longer side 448), because in a photo of a thing the thing fills only part of the frame; that map is
  cut into more regions (5 levels, about 70 vectors) and a document scores its best cosine over them, so one
  region that shows the thing is enough. Two network passes per query, one per document; measured against
  the four-pass recipe before it in docs/quality.md.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import BadImageError
from .networks import open_trunk, preprocess_pixels
from .whitening import DescriptorSet, unit_rows

DIM = 512
MODEL_ID = "vgg19-rmac-sq224-pcaw"  # stored with every document: a recipe change never mixes vectors
DOCUMENT_SIZES = ("sq224",)  # "sqN": squashed to NxN; "N": aspect kept, longer side N
DOCUMENT_LEVELS = 3  # R-MAC levels: 14 regions at 224x224
QUERY_SIZES = ("448",)
QUERY_LEVELS = 5  # about 70 regions at 448x336


class Embedder:
    """Turns RGB images into 512-d descriptors: DescriptorSets for documents, region vectors for queries."""

    model_id = MODEL_ID
    dim = DIM
    whitened = True  # documents and queries are compared after the index's PCA-whitening

    def __init__(self, weights: str | None = None, *, batch_size: int = 8, precision: str = "fp32",
                 int8_model: Path | None = None):
        self.weights = weights
        self.batch_size = batch_size
        self.precision = precision  # "fp32": TensorFlow (the reference); "int8": OpenVINO (networks.py)
        self.int8_model = int8_model
        self._forward = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "Embedder":
        return cls(settings.weights, batch_size=settings.batch_size, precision=settings.effective_precision,
                   int8_model=settings.int8_model)

    @staticmethod
    def preprocess(image: Image.Image, size: str) -> np.ndarray:
        """RGB image -> (h, w, 3) float32 network input at `size` ("sqN" or "N", see DOCUMENT_SIZES)."""
        if size.startswith("sq"):
            shape = (int(size[2:]), int(size[2:]))
        else:
            scale = int(size) / max(image.size)
            shape = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        pixels = np.asarray(image.convert("RGB").resize(shape, Image.BILINEAR), dtype=np.float32)  # RGB 0..255
        return preprocess_pixels(pixels)  # (h, w, 3) BGR, ImageNet mean removed ("caffe" mode)

    def feature_maps(self, images: Sequence[Image.Image], size: str) -> list[np.ndarray]:
        """block5_conv4 of each image at `size`: (h/16, w/16, 512) each; same-shape inputs run batch_size at a time."""
        forward = self._load()
        if not size.startswith("sq"):
            return [forward(self.preprocess(image, size)[None])[0] for image in images]
        maps = []
        for start in range(0, len(images), self.batch_size):
            maps += list(forward(np.stack([self.preprocess(image, size)
                                           for image in images[start:start + self.batch_size]])))
        return maps

    def describe(self, images: Sequence[Image.Image]) -> list[DescriptorSet]:
        """Documents: raw R-MAC vector (summed over DOCUMENT_SIZES) and all region descriptors of each image."""
        per_size = [[region_maxima(m, DOCUMENT_LEVELS) for m in self.feature_maps(images, size)]
                    for size in DOCUMENT_SIZES]
        described = []
        for regions in zip(*per_size):  # one tuple of (R_size, 512) arrays per image
            raw = raw_vector(regions)
            if not np.isfinite(raw).all() or np.linalg.norm(raw) < 0.5:
                raise BadImageError("the image produced no features at all (a blank image?)")
            described.append(DescriptorSet(raw=raw, regions=np.concatenate(regions)))
        return described

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The raw (unwhitened) document vectors: (n, 512) float32, unit rows."""
        if not images:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([d.raw for d in self.describe(images)])

    def embed_query(self, image: Image.Image) -> np.ndarray:
        """The image's own document vector (so an indexed image finds itself at 1.0), then its region vectors at
        every QUERY_SIZES size; unwhitened: (1 + R, 512), about 70 rows."""
        regions = [region_maxima(self.feature_maps([image], size)[0], QUERY_LEVELS) for size in QUERY_SIZES]
        return np.concatenate([self.describe([image])[0].raw[None], *regions])

    def _load(self):
        with self._lock:
            if self._forward is None:
                self._forward = open_trunk(self.precision, weights=self.weights, int8_model=self.int8_model)
            return self._forward


def raw_vector(regions_per_size: Sequence[np.ndarray]) -> np.ndarray:
    """A document's raw vector from its (R_size, 512) region maxima at each size: regions summed per size, the
    sizes summed, unit length: (512,)."""
    return unit_rows(np.sum([unit_rows(r.sum(axis=0)) for r in regions_per_size], axis=0))


def region_boxes(h: int, w: int, levels: int) -> list[tuple[int, int, int, int]]:
    """R-MAC regions of an (h, w) map as (y0, x0, y1, x1): the whole map, then at level l = 1..levels squares of
    side 2*min(h, w)/(l + 1) on a grid with about 40% overlap, one more step along the longer side (as in
    Tolias et al. and cnnimageretrieval-pytorch)."""
    short = min(h, w)
    steps = np.arange(2, 8)
    overlap = (short ** 2 - short * (max(h, w) - short) / (steps - 1)) / short ** 2
    extra = int(np.argmin(np.abs(overlap - 0.4))) + 1
    extra_x, extra_y = (extra if w > h else 0), (extra if h > w else 0)
    boxes = [(0, 0, h, w)]
    for level in range(1, levels + 1):
        side = int(2 * short / (level + 1))
        if side < 1:
            continue
        half = int(np.floor(side / 2 - 1))
        step_x = 0.0 if level + extra_x == 1 else (w - side) / (level + extra_x - 1)
        step_y = 0.0 if level + extra_y == 1 else (h - side) / (level + extra_y - 1)
        xs = (np.floor(half + np.arange(level + extra_x) * step_x) - half).astype(int)
        ys = (np.floor(half + np.arange(level + extra_y) * step_y) - half).astype(int)
        boxes += [(int(y), int(x), int(y) + side, int(x) + side) for y in ys for x in xs]
    return list(dict.fromkeys(boxes))


def region_maxima(feature_map: np.ndarray, levels: int) -> np.ndarray:
    """L2-normalised max of each R-MAC region of a (h, w, 512) map: (R, 512)."""
    h, w, _ = feature_map.shape
    maxima = np.stack([feature_map[y0:y1, x0:x1].max(axis=(0, 1)) for y0, x0, y1, x1 in region_boxes(h, w, levels)])
    return unit_rows(maxima[np.linalg.norm(maxima, axis=1) > 1e-6])  # a blank region describes nothing
