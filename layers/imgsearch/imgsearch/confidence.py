"""How sure a hit is, in words people can act on: a confidence in [0, 1] and a strict "verified".

The cosine alone cannot say it: a phone photo of an indexed cover may score 0.3 and a stranger 0.45. What the
re-ranker measured can: how many local features agree on one homography, and whether that homography is a
plausible view of a flat object (not mirrored, not folded, not a point). The confidence is a logistic model of
those measurements, fitted and calibrated on held-out covers (bench/quality/confidence.py), so that hits at
0.9 are right about 9 times in 10 on that data; docs/quality.md has the reliability table and how it was
guarded against tuning to one phone.
"""

from __future__ import annotations

import math

import numpy as np

from .local_features import Match

# Fitted by `python bench/quality/confidence.py report` on SMVS E63 (slopes held >= 0; docs/quality.md). Once the
# geometric inliers are known the fit finds no use for the cosine (0 in both cross-validation folds): it is kept
# in the model so that a refit on other photos can weigh it.
_INTERCEPT, _COSINE, _LOG_INLIERS = -6.69, 0.0, 2.51
# "A confident match" from here up: more likely right than wrong. On E63 (cross-validated) every threshold from
# 0.5 to 0.75 shows the right cover first and confident for >= 90% of queries and "no confident match" for >= 90%
# of queries whose cover is left out; 0.5 keeps the most recall for harder photos.
CONFIDENT = 0.5
MIN_SPREAD = 0.01  # inliers cover at least this share of both images' keypoint area (E63's right covers: >= 0.017)
_MAX_SCALE = 8.0  # shrunk images are both at most local_features.MAX_SIDE: a larger zoom is no real view
_MAX_ANISOTROPY = 6.0  # a flat object seen at a steep angle stretches one way a few times, not more


def plausible(match: Match) -> bool:
    """A homography that can be a real view of a flat object: finite, not mirrored, a sane zoom and stretch, and
    the query's frame mapped to a convex quadrilateral (no fold, no twist)."""
    h, outline = match.homography, match.outline
    if h is None or outline is None or not np.isfinite(h).all() or abs(h[2, 2]) < 1e-9:
        return False
    affine = (h / h[2, 2])[:2, :2]
    if np.linalg.det(affine) <= 0:
        return False
    largest, smallest = np.linalg.svd(affine, compute_uv=False)
    if not (1 / _MAX_SCALE <= math.sqrt(largest * smallest) <= _MAX_SCALE and largest <= _MAX_ANISOTROPY * smallest):
        return False
    edges = np.roll(outline, -1, axis=0) - outline  # (4, 2)
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(turns > 0) or np.all(turns < 0))


def geometric_inliers(match: Match) -> int:
    """The inliers that count: those of a plausible homography spread over both images, else none."""
    if not plausible(match) or min(match.query_spread, match.candidate_spread) < MIN_SPREAD:
        return 0
    return match.inliers


def verified(match: Match, min_inliers: int) -> bool:
    """The same object, shown: enough inliers of a plausible homography, spread over both images."""
    return geometric_inliers(match) >= min_inliers


def confidence(cosine: float, match: Match) -> float:
    """P(the hit shows what the query shows), from its cosine and its geometric inliers. Increases with both, so
    ordering by it never puts a hit with fewer inliers and a lower cosine above another."""
    z = _INTERCEPT + _COSINE * cosine + _LOG_INLIERS * math.log1p(geometric_inliers(match))
    return 1.0 / (1.0 + math.exp(-z))


UNVERIFIED_MAX = confidence(1.0, Match())  # the most a hit without geometric inliers can have (0.0012 today)
