"""Local features for geometric re-ranking: the step that finds the object, not just the copy.

At ingest each image gets a few hundred RootSIFT keypoints, stored compactly with its document. At query time
the best global candidates are verified: descriptor matches (Lowe's ratio test) must agree on one homography
(RANSAC); the inlier count says whether the candidate really shows what the query shows. OpenCV
(opencv-python-headless, the `rerank` extra) does the work. Recipe and measurements: docs/quality.md.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import ConfigError
from .whitening import unit_rows

MAX_SIDE = 640  # detect on the image shrunk to this longer side: phone photos and catalogue images meet halfway
NFEATURES = 500  # ~66 KB per document
RATIO = 0.8
REPROJECTION_PX = 8.0
_MAGIC = b"LF1"  # format marker: blobs of another format are ignored, never misread
# Ingest and search extract local features here while the network runs: OpenCV and OpenVINO both release the GIL
BESIDE_THE_NETWORK = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-features")


@dataclass(frozen=True)
class LocalFeatures:
    xy: np.ndarray  # (n, 2) float32 keypoint positions in the shrunk image
    descriptors: np.ndarray  # (n, 128) uint8 RootSIFT

    def __len__(self) -> int:
        return len(self.xy)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ConfigError("re-ranking needs OpenCV: install opencv-python-headless "
                          "or set IMGSEARCH_RERANK=false") from None
    return cv2


def preload() -> None:
    """Import OpenCV now, in the thread that builds the service. First imported by BESIDE_THE_NETWORK's thread, it
    made ingest 25% slower, with 25 ms more CPU per image (docs/benchmarks.md). If it is missing,
    its first use says so."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        pass


def extract(image: Image.Image) -> LocalFeatures:
    """RootSIFT keypoints of an RGB image (L1-normalised SIFT, square-rooted, scaled into uint8)."""
    cv2 = _cv2()
    gray = np.asarray(image.convert("L"))  # (h, w) uint8
    scale = min(1.0, MAX_SIDE / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    keypoints, sift = cv2.SIFT_create(nfeatures=NFEATURES).detectAndCompute(gray, None)
    if sift is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    sift = sift.astype(np.float32)  # (n, 128)
    root = np.sqrt(sift / (sift.sum(axis=1, keepdims=True) + 1e-7))  # (n, 128), unit L2 norm
    descriptors = np.clip(np.round(root * 512.0), 0, 255).astype(np.uint8)  # components stay below ~0.5
    return LocalFeatures(np.array([k.pt for k in keypoints], dtype=np.float32), descriptors)


def encode(features: LocalFeatures) -> bytes:
    """Magic, count, dimension, then xy as float16 and descriptors as uint8."""
    n, dim = features.descriptors.shape
    return (_MAGIC + struct.pack("<HH", n, dim) + features.xy.astype("<f2").tobytes()
            + features.descriptors.astype(np.uint8).tobytes())


def decode(blob: bytes | None) -> LocalFeatures | None:
    """The stored features, or None for a missing or foreign blob (such a document is simply not verified)."""
    if not blob or blob[:3] != _MAGIC or len(blob) < 7:
        return None
    n, dim = struct.unpack("<HH", blob[3:7])
    if len(blob) != 7 + 4 * n + n * dim:
        return None
    xy = np.frombuffer(blob, dtype="<f2", count=2 * n, offset=7).reshape(n, 2).astype(np.float32)
    descriptors = np.frombuffer(blob, dtype=np.uint8, count=n * dim, offset=7 + 4 * n).reshape(n, dim)
    return LocalFeatures(xy, descriptors)


@dataclass(frozen=True)
class Match:
    """What geometric verification found between the query and one candidate. Positions are in the shrunk images
    (MAX_SIDE); homography maps query points onto the candidate."""

    inliers: int = 0  # ratio-test matches that agree on one RANSAC homography
    matches: int = 0  # ratio-test matches
    homography: np.ndarray | None = None  # (3, 3)
    query_spread: float = 0.0  # area of the inliers' convex hull / that of all the query's keypoints
    candidate_spread: float = 0.0  # the same in the candidate
    outline: np.ndarray | None = None  # (4, 2) the query keypoints' bounding box, mapped into the candidate


NO_MATCH = Match()


def outline_in_pixels(outline: np.ndarray, width: int, height: int) -> tuple[tuple[float, float], ...]:
    """A Match's outline, found in the candidate shrunk as extract shrinks it, in the candidate's pixels (width x
    height, as its document records them: the file's, since ingest decodes at least MAX_SIDE on the longer
    side): 4 (x, y) points, to 0.1 px."""
    factor = min(1.0, MAX_SIDE / max(width, height))  # extract's shrink, never an enlargement
    return tuple((round(float(x) / factor, 1), round(float(y) / factor, 1)) for x, y in outline)


def verify(query: LocalFeatures, candidates: list[LocalFeatures | None], *, min_matches: int = 4,
           min_query_spread: float = 0.0) -> list[Match]:
    """For each candidate, the ratio-test matches and those that agree on one RANSAC homography (NO_MATCH for
    None).

    All descriptor matching is one matrix product: rows are unit length, so squared distance = 2 - 2 cos.
    Candidates with fewer than min_matches matches skip RANSAC, the expensive part: they could not pass anyway;
    so do those whose matches span less than min_query_spread of the query (the inliers, a subset, span less).
    """
    found = [NO_MATCH] * len(candidates)
    present = [(i, c) for i, c in enumerate(candidates) if c is not None and len(c) >= 2]
    if len(query) < 2 or not present:
        return found
    cv2 = _cv2()
    q = unit_rows(query.descriptors)  # (nq, 128)
    similarity = q @ unit_rows(np.concatenate([c.descriptors for _, c in present])).T  # (nq, sum of sizes)
    rows = np.arange(len(q))
    start = 0
    for i, candidate in present:
        block = similarity[:, start:start + len(candidate)]  # (nq, n) this candidate's columns
        start += len(candidate)
        best = block.argmax(axis=1)  # (nq,)
        first = block[rows, best]
        block[rows, best] = -2.0
        second = block.max(axis=1)
        good = (2 - 2 * first) < RATIO ** 2 * (2 - 2 * second)  # Lowe's ratio test on squared distances
        matches = int(good.sum())
        if matches < max(4, min_matches):
            found[i] = Match(matches=matches)
            continue
        if min_query_spread and _spread(query.xy[good], query.xy) < min_query_spread:
            found[i] = Match(matches=matches)
            continue
        source = query.xy[good].reshape(-1, 1, 2)  # (m, 1, 2)
        target = candidate.xy[best[good]].reshape(-1, 1, 2)  # (m, 1, 2)
        homography, mask = cv2.findHomography(source, target, cv2.RANSAC, REPROJECTION_PX, maxIters=2000,
                                              confidence=0.995)
        if mask is None or homography is None:
            found[i] = Match(matches=matches)
            continue
        kept = mask.ravel().astype(bool)  # (m,)
        (x0, y0), (x1, y1) = query.xy.min(axis=0), query.xy.max(axis=0)
        corners = np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], dtype=np.float32)  # (4, 1, 2)
        found[i] = Match(inliers=int(kept.sum()), matches=matches, homography=homography,
                         query_spread=_spread(source[kept], query.xy),
                         candidate_spread=_spread(target[kept], candidate.xy),
                         outline=cv2.perspectiveTransform(corners, homography).reshape(4, 2))
    return found


def inliers(query: LocalFeatures, candidates: list[LocalFeatures | None], *, min_matches: int = 4) -> list[int]:
    """For each candidate, how many ratio-test matches agree on one RANSAC homography (0 for None)."""
    return [match.inliers for match in verify(query, candidates, min_matches=min_matches)]


def _spread(points: np.ndarray, everywhere: np.ndarray) -> float:
    """How much of the image's textured area the points cover: convex hull areas, points / all keypoints."""
    cv2 = _cv2()
    if len(points) < 3:
        return 0.0
    whole = cv2.contourArea(cv2.convexHull(everywhere.reshape(-1, 1, 2).astype(np.float32)))
    return float(cv2.contourArea(cv2.convexHull(points.reshape(-1, 1, 2).astype(np.float32))) / whole) \
        if whole > 0 else 0.0
