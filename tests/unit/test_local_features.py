"""Local features: the stored format, the re-ranking rule, and verification on real phone photos of covers."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgsearch import local_features as lf

from helpers import DVD_DIR, dvd_dir


def test_encoding_round_trips_and_foreign_blobs_are_ignored():
    rng = np.random.default_rng(0)
    features = lf.LocalFeatures(rng.uniform(0, 640, (300, 2)).astype(np.float32),
                                rng.integers(0, 256, (300, 128)).astype(np.uint8))
    blob = lf.encode(features)
    assert len(blob) == 7 + 300 * (4 + 128)
    back = lf.decode(blob)
    np.testing.assert_allclose(back.xy, features.xy, atol=0.5)  # float16 positions: sub-pixel
    np.testing.assert_array_equal(back.descriptors, features.descriptors)
    assert lf.decode(None) is None and lf.decode(b"") is None
    assert lf.decode(b"XYZ" + blob[3:]) is None and lf.decode(blob[:-1]) is None


def test_rerank_order_moves_only_convincing_candidates():
    assert lf.rerank_order([0, 3, 40, 16, 40], min_inliers=15) == [2, 4, 3, 0, 1]
    assert lf.rerank_order([3, 14, 0], min_inliers=15) == [0, 1, 2]  # nobody convincing: global order stays


def covers(*numbers):
    dvd_dir()
    return [(Image.open(DVD_DIR / "E63" / f"{n:03d}.jpg").convert("RGB"),
             Image.open(DVD_DIR / "Reference" / f"{n:03d}.jpg").convert("RGB")) for n in numbers]


def test_a_phone_photo_verifies_against_its_cover_only():
    (photo_a, cover_a), (photo_b, cover_b) = covers(1, 2)
    query = lf.extract(photo_a)
    assert 100 < len(query) <= lf.NFEATURES
    same, missing, other = lf.inliers(query, [lf.decode(lf.encode(lf.extract(cover_a))), None,
                                              lf.extract(cover_b)])
    assert same >= 30 and missing == 0 and other < 15, (same, other)


def test_blank_images_have_no_features_and_verify_nothing():
    blank = lf.extract(Image.new("RGB", (300, 300), (128, 128, 128)))
    assert len(blank) == 0
    assert lf.inliers(blank, [blank]) == [0]
