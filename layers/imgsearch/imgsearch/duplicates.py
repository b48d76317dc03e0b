"""Copies flagged at ingest: an upload that is the same picture as an indexed image (re-encoded, resized,
cropped, brightened, framed), not merely a photo of the same thing.

At ingest, each new document's nearest indexed images (SHORTLIST, by cosine, its own key left out: a re-upload is
no copy) are checked with the local features. A copy maps onto its original by a plain zoom and shift (enough
inliers, no stretch, no perspective) that explains most of the new image: a photo of a cover is seen at an angle,
and two covers that share a studio's banner agree on the banner only. The global cosine is not part of the rule:
its scale changes with the index's whitening. The thresholds come from bench/quality/duplicates.py
(docs/quality.md: copies found, false copies and photos on SMVS).

The document records the group's original (the first indexed: a copy of a copy points at the first) in
`duplicate_of`; GET /duplicates lists the groups and a search with collapse=true shows one image per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from . import local_features
from .confidence import geometric_inliers, plausible
from .index import ImageDocument, IndexBackend, SearchRequest
from .local_features import LocalFeatures, Match

SHORTLIST = 5  # nearest documents checked: a copy's original is its nearest neighbour or close to it
MAX_ANISOTROPY = 1.05  # a zoom stretches no way more than another (SMVS: copies <= 1.02, photos median 1.22)
MAX_PERSPECTIVE = 5e-4  # the homography's projective terms, in the shrunk images' pixels (copies <= 3.4e-4)
MIN_SPREAD = 0.6  # the inliers span this share of the new image's keypoint area (covers sharing a banner: <= 0.51)


def describe(match: Match) -> dict:
    """What the copy rule looks at, as plain numbers (bench/quality/duplicates.py records them)."""
    found = {"inliers": match.inliers, "geometric": geometric_inliers(match),
             "query_spread": round(match.query_spread, 3), "candidate_spread": round(match.candidate_spread, 3)}
    if plausible(match):
        h = match.homography / match.homography[2, 2]
        largest, smallest = np.linalg.svd(h[:2, :2], compute_uv=False)
        found.update(anisotropy=round(float(largest / smallest), 4),
                     perspective=round(float(np.abs(h[2, :2]).sum()), 6))
    return found


def same_picture(match: Match, *, min_inliers: int) -> bool:
    """Whether a candidate shows the same picture as the new image (the query side of the match): a zoom and shift
    of it that explains most of the new image."""
    if geometric_inliers(match) < min_inliers or match.query_spread < MIN_SPREAD:
        return False
    found = describe(match)
    return found["anisotropy"] <= MAX_ANISOTROPY and found["perspective"] <= MAX_PERSPECTIVE


@dataclass(frozen=True)
class Original:
    """What a copy's document records: its group's original, and the cosine to the image it was matched with."""

    id: str
    bucket: str
    key: str
    score: float

    def to_dict(self) -> dict:
        return {"id": self.id, "bucket": self.bucket, "key": self.key, "score": self.score}


def find_original(index: IndexBackend, document: ImageDocument, features: LocalFeatures | None, *, min_inliers: int,
                  beside: Sequence[tuple[ImageDocument, LocalFeatures | None]] = ()) -> Original | None:
    """The original this new document copies, among what the index can find now and the documents written with
    it (beside: earlier ones of its batch, not yet searchable); None when it copies nothing."""
    if features is None or len(features) < 2:
        return None
    nearest = index.search(SearchRequest(vector=document.vector, page_size=SHORTLIST, mode="knn",
                                         exclude_ids=(document.doc_id,), with_local_features=True)).hits
    candidates = [(hit.document, local_features.decode(hit.document.local_features), hit.score) for hit in nearest]
    candidates += [(other, other_features, float(document.vector @ other.vector)) for other, other_features in beside
                   if other.doc_id != document.doc_id]
    candidates = sorted(candidates, key=lambda c: -c[2])[:SHORTLIST]  # the nearest, indexed or of the batch
    matches = local_features.verify(features, [found for _, found, _ in candidates], min_matches=min_inliers,
                                    min_query_spread=MIN_SPREAD)
    for (candidate, _, cosine), match in zip(candidates, matches):
        if same_picture(match, min_inliers=min_inliers):
            root = candidate.duplicate_of or {"id": candidate.doc_id, "bucket": candidate.bucket,
                                              "key": candidate.key}  # a copy of a copy joins the first one's group
            return Original(root["id"], root["bucket"], root["key"], round(cosine, 4))
    return None


def groups(copies: Iterable[ImageDocument]) -> list[dict]:
    """Copies by their original, largest group first: [{"original": {id, bucket, key}, "copies": [documents]}]."""
    by_original: dict[str, dict] = {}
    for doc in copies:
        original = doc.duplicate_of
        group = by_original.setdefault(original["id"], {"original": {name: original[name] for name in
                                                                      ("id", "bucket", "key")}, "copies": []})
        group["copies"].append(doc)
    return sorted(by_original.values(), key=lambda g: (-len(g["copies"]), g["original"]["bucket"],
                                                       g["original"]["key"]))
