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


def _match(homography, inliers=40, spread=0.3):
    box = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], dtype=np.float32)
    h = np.asarray(homography, dtype=np.float64)
    mapped = np.c_[box, np.ones(4)] @ h.T
    return lf.Match(inliers=inliers, matches=inliers + 10, homography=h, query_spread=spread,
                    candidate_spread=spread, outline=mapped[:, :2] / mapped[:, 2:])


def test_only_a_plausible_view_of_a_flat_object_is_verified():
    from imgsearch import confidence

    assert confidence.verified(_match([[0.8, 0.1, 5], [-0.1, 0.9, 3], [1e-4, 0, 1]]), 15)  # a tilted photo
    assert not confidence.verified(_match([[-1, 0, 100], [0, 1, 0], [0, 0, 1]]), 15)  # mirrored
    assert not confidence.verified(_match([[0.01, 0, 0], [0, 0.01, 0], [0, 0, 1]]), 15)  # collapsed to a dot
    assert not confidence.verified(_match([[10, 0, 0], [0, 0.2, 0], [0, 0, 1]]), 15)  # stretched 50 to 1
    assert not confidence.verified(_match([[1, 0, 0], [0, 1, 0], [-0.015, 0, 1]]), 15)  # folded: a twisted outline
    assert not confidence.verified(_match(np.eye(3), spread=0.001), 15)  # all inliers in one spot
    assert not confidence.verified(_match(np.eye(3), inliers=14), 15)
    assert not confidence.verified(lf.NO_MATCH, 15)


def test_confidence_grows_with_the_inliers_and_never_falls_with_the_cosine():
    from imgsearch import confidence

    values = [confidence.confidence(cos, _match(np.eye(3), inliers=n)) for cos in (0.2, 0.5) for n in (0, 10, 40)]
    assert all(0 <= v <= 1 for v in values)
    assert values[0] < values[1] < values[2] and values[3] < values[4] < values[5]
    assert values[0] <= values[3] and values[2] <= values[5]  # never down with the cosine
    assert confidence.confidence(0.9, lf.NO_MATCH) == confidence.confidence(0.9, _match(np.eye(3), spread=0))


def test_the_outline_comes_back_in_the_candidates_own_pixels():
    """A candidate that is the query seen through a known homography, stored from a 1280 x 960 image (so its
    features were found at 640 x 480): the outline is the query's keypoint box under that homography, doubled."""
    rng = np.random.default_rng(1)
    xy = rng.uniform([20, 30], [380, 270], (200, 2)).astype(np.float32)  # the query's keypoints (shrunk query)
    xy[:2] = [[20, 30], [380, 270]]  # their box
    descriptors = rng.integers(0, 256, (200, 128)).astype(np.uint8)
    h = np.array([[1.1, 0.1, 60], [-0.05, 1.0, 40], [1e-4, 0, 1]])
    mapped = np.c_[xy, np.ones(len(xy))] @ h.T
    candidate = lf.LocalFeatures((mapped[:, :2] / mapped[:, 2:]).astype(np.float32), descriptors)
    [match] = lf.verify(lf.LocalFeatures(xy, descriptors), [candidate])
    box = np.array([[20, 30, 1], [380, 30, 1], [380, 270, 1], [20, 270, 1]]) @ h.T
    polygon = lf.outline_in_pixels(match.outline, 1280, 960)
    np.testing.assert_allclose(polygon, 2 * box[:, :2] / box[:, 2:], atol=0.2)  # 1280 px / 640 px
    assert len(polygon) == 4 and all(len(p) == 2 and v == round(v, 1) for p in polygon for v in p)
    np.testing.assert_allclose(lf.outline_in_pixels(match.outline, 960, 1280), polygon, atol=0.1)  # portrait too
    # An image within MAX_SIDE was not shrunk: its pixels are the outline's own.
    np.testing.assert_allclose(lf.outline_in_pixels(match.outline, 500, 375), match.outline, atol=0.05)


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


def test_matches_spanning_too_little_of_the_query_skip_ransac_when_asked():
    """min_query_spread (the copy check's) drops a candidate whose matches cover a corner of the query only: its
    inliers, a subset of them, could not cover more. A candidate matched all over is verified as without it."""
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 400, (200, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (200, 128)).astype(np.uint8)
    query = lf.LocalFeatures(xy, descriptors)
    corner = xy[:, 0] < 100  # a quarter of the query's width: its keypoints are all the corner candidate shares
    partial = lf.LocalFeatures(xy[corner] * 1.5 + 10, descriptors[corner])
    whole = lf.LocalFeatures(xy * 1.5 + 10, descriptors)
    assert [m.inliers >= 15 for m in lf.verify(query, [partial, whole])] == [True, True]
    skipped, kept = lf.verify(query, [partial, whole], min_query_spread=0.6)
    assert skipped.inliers == 0 and skipped.matches == corner.sum() and skipped.homography is None
    assert kept.inliers == len(xy) and kept.query_spread > 0.99
