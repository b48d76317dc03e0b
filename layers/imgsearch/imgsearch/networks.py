"""The VGG19 trunk (ImageNet weights, up to block5_conv4) on two runtimes, one interface:
`trunk(batch (b, h, w, 3) float32, preprocessed) -> (b, h/16, w/16, 512) float32`.

- `fp32`: TensorFlow/Keras, the reference path (the design's model; tests compare the other against it).
- `int8`: OpenVINO running the same weights quantised post-training by NNCF (`imgsearch build-model`, a build
  step: the converted model is an artefact made from the weights file, never committed). It is about 4.5x
  faster than TensorFlow on 2-core AVX-512 VNNI CPUs and 2.3x on AVX2-only ones (docs/benchmarks.md), and it
  never imports TensorFlow, so a cold start skips TensorFlow's 3-5 s import. Its descriptors agree with fp32 at cosine >= 0.99 (tests/model, docs/).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .errors import WeightsError

WEIGHTS_FILE_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
LAYER = "block5_conv4"
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)  # Keras' "caffe" preprocessing


def preprocess_pixels(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) RGB 0..255 -> network input: BGR with the ImageNet mean removed, as Keras' VGG19
    `preprocess_input` does (checked against it in tests/model), without importing Keras."""
    return np.asarray(rgb, dtype=np.float32)[..., ::-1] - IMAGENET_BGR_MEAN


def load_vgg19(weights: str | None):
    """Keras VGG19 up to block5_conv4 (any input size), with ImageNet weights from a file or Keras' own
    cache/download. Global max over block5_conv4 equals Keras' pooling="max" over block5_pool."""
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
        return keras.Model(base.input, base.get_layer(LAYER).output)
    except Exception as exc:  # Keras raises many kinds (HTTP, hash, HDF5 layout); all mean "no weights"
        hint = "" if weights else (
            f"; Keras could not fetch them, so download {WEIGHTS_FILE_NAME} and set IMGSEARCH_VGG19_WEIGHTS to its path")
        raise WeightsError(f"could not load the VGG19 ImageNet weights from {source}: {exc}{hint}") from exc


class TensorFlowTrunk:
    """fp32 Keras, one traced graph for every batch and image size (far less per-call overhead than predict)."""

    precision = "fp32"

    def __init__(self, weights: str | None):
        import tensorflow as tf

        model = load_vgg19(weights)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def forward(batch):
            return model(batch, training=False)  # (b, h/16, w/16, 512)

        self.model = model
        self._forward = lambda batch: forward(tf.constant(batch)).numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(batch)


class OpenVinoTrunk:
    """The int8 OpenVINO model built by `imgsearch build-model`; dynamic input size, latency-tuned."""

    precision = "int8"

    def __init__(self, model_path: Path):
        if not Path(model_path).is_file():
            raise WeightsError(
                f"the int8 model {model_path} does not exist: build it from the weights with `imgsearch build-model` "
                "(scripts/setup does), or set IMGSEARCH_PRECISION=fp32 to run the TensorFlow path")
        try:
            import openvino as ov
        except ImportError:
            raise WeightsError("IMGSEARCH_PRECISION=int8 needs OpenVINO: pip install 'imgsearch[model]', or set "
                               "IMGSEARCH_PRECISION=fp32") from None
        # Unpinned: OpenCV extracts local features beside the network, and a pinned thread cannot move off the core
        # OpenCV holds (ingest 8% faster; the network alone is as fast either way: docs/benchmarks.md).
        compiled = ov.Core().compile_model(str(model_path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                      "ENABLE_CPU_PINNING": False})
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._request.infer([np.ascontiguousarray(batch, dtype=np.float32)])[0].copy()


def open_trunk(precision: str, *, weights: str | None, int8_model: Path | None):
    if precision == "fp32":
        return TensorFlowTrunk(weights)
    if int8_model is None:
        raise WeightsError("IMGSEARCH_PRECISION=int8 needs IMGSEARCH_INT8_MODEL (built by `imgsearch build-model`)")
    return OpenVinoTrunk(int8_model)
