"""The embedder on the real VGG19 ImageNet weights (tests of meaning), and its mechanics on a seeded stand-in
weights file built here (loading path, shapes, batching, normalisation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers import reencoded_copy
from imgsearch.embedder import DIM, Embedder
from imgsearch.errors import WeightsError
from imgsearch.images import decode_image


def reference_embedding(weights: str, path) -> np.ndarray:
    """The textbook Keras pipeline, written independently of ours: load_img, preprocess_input, predict."""
    import keras
    from keras.applications.vgg19 import VGG19, preprocess_input

    model = VGG19(include_top=False, weights=weights, pooling="max", input_shape=(224, 224, 3))
    image = keras.utils.load_img(path, target_size=(224, 224), interpolation="bilinear")  # RGB
    batch = preprocess_input(keras.utils.img_to_array(image)[None])  # (1, 224, 224, 3)
    features = model.predict(batch, verbose=0)[0]  # (512,)
    return features / np.linalg.norm(features)


def vector(embedder, image) -> np.ndarray:
    return embedder.embed([image])[0]  # (512,) the raw document vector


def test_the_network_matches_the_reference_keras_pipeline(fp32_embedder, weights_path, seed_paths):
    """Our block5_conv4 at 224x224, max-pooled, is Keras' own VGG19(pooling="max"): same weights, RGB in,
    the same preprocessing. (It is also the first R-MAC region of the stored recipe at that size.)"""
    for path in seed_paths[:2]:
        image = decode_image(path.read_bytes(), max_bytes=10**8, max_pixels=10**8).image
        feature_map = fp32_embedder.feature_maps([image], "sq224")[0]  # (14, 14, 512)
        ours = feature_map.max(axis=(0, 1)) / np.linalg.norm(feature_map.max(axis=(0, 1)))
        ref = reference_embedding(weights_path, path)
        assert ours.shape == (DIM,) and ours.dtype == np.float32
        assert np.max(np.abs(ours - ref)) < 1e-4
        assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)


def test_rgb_not_bgr(embedder, seed_paths):
    """The demo fed BGR; channel order must matter, or the test above could not tell the difference."""
    image = Image.open(seed_paths[0]).convert("RGB")
    swapped = Image.fromarray(np.asarray(image)[..., ::-1].copy())
    assert float(vector(embedder, image) @ vector(embedder, swapped)) < 0.99


def test_a_reencoded_resized_cropped_copy_finds_its_original(embedder, seed_paths):
    originals = embedder.embed([Image.open(p).convert("RGB") for p in seed_paths])  # (5, 512)
    for i, path in enumerate(seed_paths):
        copy = decode_image(reencoded_copy(path), max_bytes=10**8, max_pixels=10**8, draft_size=224).image
        scores = originals @ vector(embedder, copy)  # (5,)
        assert int(np.argmax(scores)) == i, f"{path.name}: scores {np.round(scores, 3)}"
        assert scores[i] > max(np.delete(scores, i))


def test_batches_give_the_same_vectors_as_single_calls(embedder, seed_paths):
    images = [Image.open(p).convert("RGB") for p in seed_paths]
    batched = Embedder(embedder.weights, batch_size=3)
    batched._forward = embedder._forward  # share the loaded network
    together = batched.embed(images)  # (5, 512) in batches of 3 + 2
    alone = np.stack([vector(embedder, img) for img in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.fixture(scope="module")
def standin_weights(tmp_path_factory):
    """A seeded, randomly initialised VGG19 saved to a file: exercises the real loading path, not meaning."""
    import keras

    keras.utils.set_random_seed(7)
    model = keras.applications.VGG19(include_top=False, weights=None, pooling="max", input_shape=(224, 224, 3))
    path = tmp_path_factory.mktemp("weights") / "standin.weights.h5"
    model.save_weights(path)
    return str(path)


def test_mechanics_on_standin_weights(standin_weights):
    embedder = Embedder(standin_weights, batch_size=2)
    images = [Image.new("RGB", (300 + 10 * i, 200), (40 * i, 100, 200)) for i in range(3)]
    vectors = embedder.embed(images)
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, DIM)
    described = embedder.describe(images[1:2])[0]  # raw vector and the regions of the 224x224 document view
    np.testing.assert_allclose(described.raw, vectors[1], atol=1e-6)
    assert 10 <= len(described.regions) <= 14 and described.regions.shape[1] == DIM
    queries = embedder.embed_query(images[1])  # itself, then the regions at 448, five levels
    assert queries.shape[0] > 2 * len(described.regions) and queries.shape[1] == DIM
    np.testing.assert_allclose(queries[0], described.raw, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-4)


def test_missing_weights_file_is_a_clear_error_never_random_weights(tmp_path):
    with pytest.raises(WeightsError, match="not a file"):
        Embedder(str(tmp_path / "nope.h5")).embed([Image.new("RGB", (10, 10))])
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="could not load"):
        Embedder(str(broken)).embed([Image.new("RGB", (10, 10))])


def test_png_and_jpeg_of_the_same_picture_embed_alike(embedder, seed_paths):
    image = Image.open(seed_paths[1]).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    png = decode_image(out.getvalue(), max_bytes=10**8, max_pixels=10**8).image
    assert float(vector(embedder, image) @ vector(embedder, png)) > 0.999
