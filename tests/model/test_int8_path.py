"""The numerics gate of the fast path: the int8 OpenVINO trunk (the default) describes images as the fp32
TensorFlow trunk (the reference) does, on the seed images and a sample of the dataset, for documents and for
queries. If quantisation drifted, vectors stored by one path would not match queries made by the other."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import DVD_DIR, SEED_DIR
from imgsearch.embedder import Embedder
from imgsearch.images import decode_image
from imgsearch.networks import preprocess_pixels

MIN_COSINE = 0.99


def _images():
    paths = sorted(SEED_DIR.glob("*.jpg")) + sorted((DVD_DIR / "Reference").glob("*.jpg"))[::20] \
        + sorted((DVD_DIR / "E63").glob("*.jpg"))[::25]
    return [decode_image(p.read_bytes(), max_bytes=10**8, max_pixels=10**8, draft_size=224).image for p in paths]


@pytest.fixture(scope="module")
def images(seed_paths):
    found = _images()
    assert len(found) >= len(seed_paths) + 9, f"dataset sample missing under {DVD_DIR}"
    return found


def test_preprocessing_is_keras_preprocess_input():
    from keras.applications.vgg19 import preprocess_input

    pixels = np.random.default_rng(0).uniform(0, 255, (7, 9, 3)).astype(np.float32)  # RGB
    np.testing.assert_allclose(preprocess_pixels(pixels), preprocess_input(pixels.copy()), atol=1e-4)


def test_int8_document_vectors_agree_with_fp32(fp32_embedder, int8_embedder, images):
    fp32 = fp32_embedder.embed(images)  # (n, 512)
    int8 = int8_embedder.embed(images)  # (n, 512)
    cosines = np.sum(fp32 * int8, axis=1)
    assert cosines.min() >= MIN_COSINE, np.round(cosines, 4)


def test_int8_query_vectors_agree_with_fp32(fp32_embedder, int8_embedder, images):
    for image in images[::3]:
        fp32 = fp32_embedder.embed_query(image)  # (1 + R, 512)
        int8 = int8_embedder.embed_query(image)
        assert fp32.shape == int8.shape
        cosines = np.sum(fp32 * int8, axis=1)  # row by row: the same regions
        assert cosines.min() >= MIN_COSINE, np.round(cosines, 4)


def test_both_precisions_load_the_same_recipe(fp32_embedder, int8_embedder):
    assert (fp32_embedder.precision, int8_embedder.precision) == ("fp32", "int8")
    assert fp32_embedder.model_id == int8_embedder.model_id == Embedder.model_id
