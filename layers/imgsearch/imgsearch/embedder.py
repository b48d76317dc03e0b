"""VGG19 global descriptors: one Embedder per process, shared by ingest and search.

The recipe (the first one, kept compatible with the original demo's index): resize to 224x224, Keras'
`preprocess_input` on RGB (the demo fed OpenCV's BGR by mistake), VGG19 conv layers with ImageNet weights,
global max pooling -> 512 floats, L2-normalised so that cosine similarity is a dot product.
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

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (224, 224, 3) float32, ready for the network."""
        from keras.applications.vgg19 import preprocess_input

        resized = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32)  # (224, 224, 3) RGB 0..255
        return preprocess_input(pixels)  # (224, 224, 3) BGR, ImageNet mean removed ("caffe" mode)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed many images, batch_size per model call; returns (n, 512) float32, each row unit length."""
        if not images:
            return np.zeros((0, DIM), dtype=np.float32)
        forward = self._load()
        rows = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self.preprocess(img) for img in images[start:start + self.batch_size]])  # (b, 224, 224, 3)
            rows.append(np.asarray(forward(batch), dtype=np.float32))  # (b, 512)
        return normalize(np.concatenate(rows))  # (n, 512)

    def embed_one(self, image: Image.Image) -> np.ndarray:
        return self.embed([image])[0]  # (512,)

    def _load(self):
        with self._lock:
            if self._forward is None:
                self._model = load_vgg19(self.weights)
                self._forward = _compiled(self._model)
            return self._forward


def load_vgg19(weights: str | None):
    """VGG19 without the top, max pooling, with ImageNet weights from a file or Keras' own cache/download."""
    if weights:
        if not os.path.isfile(weights):
            raise WeightsError(f"IMGSEARCH_VGG19_WEIGHTS points at {weights!r}, which is not a file")
        source = weights
    else:
        source = "imagenet"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, unless asked for
    import keras

    try:
        return keras.applications.VGG19(
            include_top=False, weights=source, pooling="max", input_shape=(INPUT_SIZE, INPUT_SIZE, 3))
    except Exception as exc:  # Keras raises many kinds (HTTP, hash, HDF5 layout); all mean "no weights"
        hint = "" if weights else (
            f"; Keras could not fetch them, so download {WEIGHTS_FILE_NAME} and set IMGSEARCH_VGG19_WEIGHTS to its path")
        raise WeightsError(f"could not load the VGG19 ImageNet weights from {source}: {exc}{hint}") from exc


def _compiled(model):
    """One traced graph for every batch size: far less per-call overhead than model.predict."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)])
    def forward(batch):
        return model(batch, training=False)  # (b, 512)

    return lambda batch: forward(tf.constant(batch)).numpy()


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows to unit length; an all-zero row would make cosine undefined, so it is an error."""
    vectors = np.asarray(vectors, dtype=np.float32)  # (n, d)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (n, 1)
    if np.any(norms < 1e-12):
        raise BadImageError("the image produced no features at all (a blank image?)")
    return vectors / norms
