"""The whitening on synthetic descriptors: what it must do for search, its storage formats, and the refit
policy in the pipeline (with an index that records what it was asked)."""

from __future__ import annotations

import numpy as np
import pytest

from imgsearch.whitening import IDENTITY_ID, DescriptorSet, Whitening, WhiteningStats, unit_rows


def regions(n: int, seed: int, dim: int = 512) -> np.ndarray:
    """Region descriptors with one dominant shared direction (like real ones) plus image-specific detail."""
    rng = np.random.default_rng(seed)
    shared = np.zeros(dim)
    shared[:8] = 5.0
    return unit_rows(shared + np.abs(rng.normal(size=(n, dim))))


def test_identity_only_normalises():
    vectors = np.abs(np.random.default_rng(1).normal(size=(3, 512))).astype(np.float32)
    assert np.allclose(Whitening.identity().apply(vectors), unit_rows(vectors), atol=1e-6)
    assert Whitening.identity().id == IDENTITY_ID


def test_whitening_removes_what_every_image_shares():
    stats = WhiteningStats()
    for seed in range(20):
        stats.add(regions(30, seed))
    whitening = stats.fit()
    a, b = regions(1, 100), regions(1, 101)  # two unrelated images
    raw_similarity = float(a[0] @ b[0])
    whitened_similarity = float(whitening.apply(a)[0] @ whitening.apply(b)[0])
    assert raw_similarity > 0.6  # the shared direction makes everything look alike
    assert abs(whitened_similarity) < 0.3
    noisy = unit_rows(a + 0.3 * unit_rows(np.random.default_rng(5).normal(size=a.shape)))  # the same image, degraded
    assert float(whitening.apply(a)[0] @ whitening.apply(noisy)[0]) > whitened_similarity + 0.3
    assert stats.images == 20 and whitening.images == 20 and whitening.id.startswith("pcaw-")


def test_stats_equal_a_fit_on_all_regions_at_once():
    one, two = regions(400, 1), regions(400, 2)  # more regions than dimensions: one answer up to round-off
    stats_split, stats_once = WhiteningStats(), WhiteningStats()
    stats_split.add(one)
    stats_split.add(two)
    stats_once.add(np.concatenate([one, two]))
    split, once = stats_split.fit(), stats_once.fit()
    x = regions(3, 9)
    assert np.allclose(split.apply(x), once.apply(x), atol=1e-4)


def test_fit_needs_descriptors():
    with pytest.raises(ValueError):
        WhiteningStats().fit()


def test_whitening_round_trips_through_bytes():
    stats = WhiteningStats()
    stats.add(regions(50, 3))
    whitening = stats.fit()
    again = Whitening.from_bytes(whitening.to_bytes(), whitening.id, whitening.images)
    assert np.array_equal(again.projection, whitening.projection) and np.array_equal(again.mean, whitening.mean)
    with pytest.raises(ValueError):
        Whitening.from_bytes(whitening.to_bytes()[:-4], whitening.id, 1)


def test_descriptor_set_round_trips_at_half_precision():
    found = regions(35, 4)
    described = DescriptorSet(raw=unit_rows(found.sum(axis=0)), regions=found)
    blob = described.to_bytes()
    again = DescriptorSet.from_bytes(blob)
    assert again.regions.shape == (35, 512) and len(blob) < 40_000
    assert np.allclose(again.raw, described.raw, atol=1e-3) and np.allclose(again.regions, found, atol=1e-3)
    with pytest.raises(ValueError):
        DescriptorSet.from_bytes(b"LF1" + blob[3:])
