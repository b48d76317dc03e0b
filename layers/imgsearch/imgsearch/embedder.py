"""VGG19 global descriptors: one Embedder per process, shared by ingest and search.

Every vector comes from VGG19's last convolution (block5_conv4, ImageNet weights) on RGB input with Keras'
`preprocess_input` (the demo fed OpenCV's BGR by mistake), pooled by R-MAC (Tolias et al. 2016): the maximum of
each of a set of overlapping square regions, each L2-normalised.

- A document is looked at twice, squashed to 224x224 and with its longer side at 320; per size the regions are
  summed, then the sizes are summed: the raw vector. The stored vector is the raw one PCA-whitened with the
  index's whitening (whitening.py); the raw vector and the regions are kept so a refit needs no network.
- A query is described like a document, and also looked at closer (longer side 448 and 640), because in a
  photo of a thing the thing fills only part of the frame, and cut into more regions (5 levels, about 140
  vectors); a document scores its best cosine over them, so one region that shows the thing is enough, and an
  indexed image still finds itself at 1.0. Measured in docs/quality.md.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import BadImageError, WeightsError
from .whitening import DescriptorSet, unit_rows

DIM = 512
MODEL_ID = "vgg19-rmac-sq224+320-pcaw"  # stored with every document: a recipe change never mixes vectors
DOCUMENT_SIZES = ("sq224", "320")  # "sqN": squashed to NxN; "N": aspect kept, longer side N
DOCUMENT_LEVELS = 3  # R-MAC levels: about 14 regions at 224x224, 21 at 320x240
QUERY_SIZES = ("448", "640")
QUERY_LEVELS = 5  # about 70 regions per size
WEIGHTS_FILE_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


class Embedder:
    """Turns RGB images into 512-d descriptors: DescriptorSets for documents, region vectors for queries."""

    model_id = MODEL_ID
    dim = DIM
    whitened = True  # documents and queries are compared after the index's PCA-whitening

    def __init__(self, weights: str | None = None, *, batch_size: int = 8):
        self.weights = weights
        self.batch_size = batch_size
        self._model = None
        self._forward = None
        self._lock = threading.Lock()

    @staticmethod
    def preprocess(image: Image.Image, size: str) -> np.ndarray:
        """RGB image -> (h, w, 3) float32 network input at `size` ("sqN" or "N", see DOCUMENT_SIZES)."""
        from keras.applications.vgg19 import preprocess_input

        if size.startswith("sq"):
            shape = (int(size[2:]), int(size[2:]))
        else:
            scale = int(size) / max(image.size)
            shape = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        pixels = np.asarray(image.convert("RGB").resize(shape, Image.BILINEAR), dtype=np.float32)  # RGB 0..255
        return preprocess_input(pixels)  # (h, w, 3) BGR, ImageNet mean removed ("caffe" mode)

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
        """Documents: raw multi-size R-MAC vector and all region descriptors of each image."""
        per_size = [[region_maxima(m, DOCUMENT_LEVELS) for m in self.feature_maps(images, size)]
                    for size in DOCUMENT_SIZES]
        described = []
        for regions in zip(*per_size):  # one tuple of (R_size, 512) arrays per image
            raw = unit_rows(np.sum([unit_rows(r.sum(axis=0)) for r in regions], axis=0))
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
        every QUERY_SIZES size; unwhitened: (1 + R, 512), about 140 rows."""
        regions = [region_maxima(self.feature_maps([image], size)[0], QUERY_LEVELS) for size in QUERY_SIZES]
        return np.concatenate([self.describe([image])[0].raw[None], *regions])

    def _load(self):
        with self._lock:
            if self._forward is None:
                self._model = load_vgg19(self.weights)
                self._forward = _compiled(self._model)
            return self._forward


def load_vgg19(weights: str | None):
    """VGG19 up to block5_conv4 (any input size), with ImageNet weights from a file or Keras' own cache/download.
    Global max over block5_conv4 equals Keras' pooling="max" over block5_pool (max of maxima)."""
    if weights:
        if not os.path.isfile(weights):
            raise WeightsError(f"IMGSEARCH_VGG19_WEIGHTS points at {weights!r}, which is not a file")
        source = weights
    else:
        source = "imagenet"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, unless asked for
    import keras

    try:
        base = keras.applications.VGG19(include_top=False, weights=source, input_shape=(None, None, 3))
        return keras.Model(base.input, base.get_layer("block5_conv4").output)
    except Exception as exc:  # Keras raises many kinds (HTTP, hash, HDF5 layout); all mean "no weights"
        hint = "" if weights else (
            f"; Keras could not fetch them, so download {WEIGHTS_FILE_NAME} and set IMGSEARCH_VGG19_WEIGHTS to its path")
        raise WeightsError(f"could not load the VGG19 ImageNet weights from {source}: {exc}{hint}") from exc


def _compiled(model):
    """One traced graph for every batch and image size: far less per-call overhead than model.predict."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def forward(batch):
        return model(batch, training=False)  # (b, h/16, w/16, 512)

    return lambda batch: forward(tf.constant(batch)).numpy()


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
