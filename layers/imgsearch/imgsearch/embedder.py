"""VGG19 global descriptors: one Embedder per process, shared by ingest and search.

Stored vectors (the first recipe, kept compatible with the original demo's index): resize to 224x224, Keras'
`preprocess_input` on RGB (the demo fed OpenCV's BGR by mistake), VGG19 conv layers with ImageNet weights,
global max pooling -> 512 floats, L2-normalised so that cosine similarity is a dot product.

Queries add region vectors: in a photo of a thing the thing is smaller and surrounded by clutter, so the query is
also looked at closer (longer side 448) and described region by region (R-MAC regions, Tolias et al. 2016); a
document scores its best cosine over the query's vectors. The first query vector is the stored recipe itself,
so an indexed image still finds itself at 1.0. Measured in docs/quality.md.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import BadImageError, WeightsError

DIM = 512
INPUT_SIZE = 224
MODEL_ID = "vgg19-imagenet-mac224-l2"  # stored with every document: a recipe change never mixes vectors
QUERY_MAX_SIDE = 448
REGION_LEVELS = 3  # about 21 regions at 448x336
WEIGHTS_FILE_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


class Embedder:
    """Turns RGB images into L2-normalised float32 vectors of shape (n, 512)."""

    model_id = MODEL_ID
    dim = DIM

    def __init__(self, weights: str | None = None, *, batch_size: int = 8):
        self.weights = weights
        self.batch_size = batch_size
        self._model = None
        self._forward = None
        self._lock = threading.Lock()

    def preprocess(self, image: Image.Image, size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> np.ndarray:
        """RGB image -> (h, w, 3) float32 at `size` (w, h), ready for the network."""
        from keras.applications.vgg19 import preprocess_input

        resized = image.convert("RGB").resize(size, Image.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32)  # (h, w, 3) RGB 0..255
        return preprocess_input(pixels)  # (h, w, 3) BGR, ImageNet mean removed ("caffe" mode)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed many images, batch_size per model call; returns (n, 512) float32, each row unit length."""
        if not images:
            return np.zeros((0, DIM), dtype=np.float32)
        forward = self._load()
        rows = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self.preprocess(img) for img in images[start:start + self.batch_size]])  # (b, 224, 224, 3)
            rows.append(forward(batch).max(axis=(1, 2)))  # (b, 14, 14, 512) -> (b, 512): global max pooling
        return normalize(np.concatenate(rows))  # (n, 512)

    def embed_one(self, image: Image.Image) -> np.ndarray:
        return self.embed([image])[0]  # (512,)

    def embed_query(self, image: Image.Image) -> np.ndarray:
        """The stored recipe's vector, then the region vectors of the image at longer side 448: (1 + R, 512)."""
        whole = self.embed([image])  # (1, 512)
        scale = QUERY_MAX_SIDE / max(image.size)
        size = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        feature_map = self._load()(self.preprocess(image, size)[None])[0]  # (h/16, w/16, 512)
        return np.concatenate([whole, region_maxima(feature_map)])  # (1 + R, 512)

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


def region_maxima(feature_map: np.ndarray, levels: int = REGION_LEVELS) -> np.ndarray:
    """L2-normalised max of each R-MAC region of a (h, w, 512) map: the whole map, then at level l = 1..levels
    squares of side 2*min(h, w)/(l + 1) on a grid with about 40% overlap. Returns (R, 512)."""
    h, w, _ = feature_map.shape
    short = min(h, w)
    steps = np.arange(2, 8)
    overlap = ((short ** 2 - short * (max(h, w) - short) / (steps - 1)) / short ** 2)
    extra = int(np.argmin(np.abs(overlap - 0.4))) + 1  # more regions along the longer side
    boxes = [(0, 0, h, w)]
    for level in range(1, levels + 1):
        side = int(2 * short / (level + 1))
        across, down = level + (extra if w > h else 0), level + (extra if h > w else 0)
        xs = np.linspace(0, w - side, across).astype(int) if across > 1 else [0]
        ys = np.linspace(0, h - side, down).astype(int) if down > 1 else [0]
        boxes += [(y, x, y + side, x + side) for y in ys for x in xs]
    maxima = np.stack([feature_map[y0:y1, x0:x1].max(axis=(0, 1)) for y0, x0, y1, x1 in dict.fromkeys(boxes)])
    return maxima / (np.linalg.norm(maxima, axis=1, keepdims=True) + 1e-12)  # (R, 512)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows to unit length; an all-zero row would make cosine undefined, so it is an error."""
    vectors = np.asarray(vectors, dtype=np.float32)  # (n, d)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (n, 1)
    if np.any(norms < 1e-12):
        raise BadImageError("the image produced no features at all (a blank image?)")
    return vectors / norms
