"""Search: a query image (or an indexed one) -> embed -> index.search -> re-rank -> typed hits.

Options come in as a SearchOptions (checked in options.py); results go out as frozen Hit records in a
SearchResults. Adapters turn those into JSON (to_dict) or lines of text.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import confidence as confidence_model
from . import duplicates, local_features
from .config import Settings
from .errors import InvalidRequestError, NotFoundError
from .images import decode_image
from .index import ImageDocument, IndexBackend, ScoredDocument, SearchRequest, doc_id
from .options import DEFAULT_PAGE_SIZE, MAX_RESULT_WINDOW, SearchOptions, check_search
from .storage import check_key
from .storages import Storages
from .upkeep import CurrentWhitening

if TYPE_CHECKING:
    from .embedder import Embedder

COLLAPSE_WINDOW = 4  # collapse=true ranks this many times the hits a page needs, then keeps one per group


@dataclass(frozen=True)
class Hit:
    score: float  # cosine similarity, rounded to 6 places
    key: str
    bucket: str
    url: str | None  # None when this process does not serve the hit's bucket (not in its allowlist)
    size: int | None
    width: int | None
    height: int | None
    content_type: str | None
    id: str
    inliers: int | None = None  # re-ranked hits only: how many local features agree geometrically
    verified: bool | None = None  # re-ranked hits only: enough inliers of a plausible view (confidence.verified)
    confidence: float | None = None  # with re-ranking on: P(the hit shows what the query shows), calibrated
    # verified hits only: where the query was found, 4 (x, y) corners in the hit's pixels (width x height)
    match_polygon: tuple[tuple[float, float], ...] | None = None
    # the bucket's labels (labels.py); None for documents indexed before labels were kept
    folder: str | None = None
    tags: dict[str, str] | None = None
    user_metadata: dict[str, str] | None = None
    duplicate_of: dict | None = None  # a copy (duplicates.py): its group's original {id, bucket, key, score}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchResults:
    hits: tuple[Hit, ...]
    total: int  # hits at or above min_score over all pages (for kNN: among the k nearest)
    page: int
    page_size: int
    took_ms: float

    def to_dict(self) -> dict:
        return {"hits": [hit.to_dict() for hit in self.hits], "total": self.total, "page": self.page,
                "page_size": self.page_size, "took_ms": round(self.took_ms, 1)}


class Searcher:
    """Query image or indexed image -> hits, best first; optionally verified with local features."""

    def __init__(self, settings: Settings, embedder: Embedder, index: IndexBackend, storages: Storages,
                 whitening: CurrentWhitening):
        self.settings, self.embedder, self.index = settings, embedder, index
        self.storages, self.whitening = storages, whitening

    def search_image(self, data: bytes, options: SearchOptions = SearchOptions(), *,
                     exclude_ids: tuple[str, ...] = ()) -> SearchResults:
        """Search with an uploaded image; exclude_ids: documents to answer as if they were not indexed (the
        evaluation's leave-out)."""
        started = time.perf_counter()
        image = decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_pixels,
                             draft_size=224).image
        features = (local_features.BESIDE_THE_NETWORK.submit(local_features.extract, image) if self._reranks(options)
                    else None)
        vectors = self.whitening.current_whitening().apply(self.embedder.embed_query(image))  # (1 + R, 512)
        return self._search(vectors, options, started, exclude_ids=exclude_ids,
                            query_features=features.result if features else lambda: local_features.extract(image))

    def similar_to(self, bucket: str, key: str, options: SearchOptions = SearchOptions()) -> SearchResults:
        """More like an already indexed image, without uploading it again; the image itself is left out."""
        started = time.perf_counter()
        document = self.document(bucket, key)
        return self._search(document.vector, options, started, exclude_ids=(document.doc_id,),
                            query_features=lambda: local_features.decode(document.local_features))

    def document(self, bucket: str, key: str) -> ImageDocument:
        try:
            check_key(key)
        except InvalidRequestError as exc:  # no object can have this key, so none is indexed
            raise NotFoundError(f"no image has this key: {exc}") from None
        document = self.index.get(doc_id(bucket, key))
        if document is None:
            raise NotFoundError(f"{key!r} is not indexed in bucket {bucket!r}")
        return document

    def duplicate_groups(self, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE) -> dict:
        """The groups of copies (duplicates.py), largest first, one page of them: each original (`indexed`: false
        once it was deleted) and its copies, with URLs where this process serves their bucket."""
        check_search(min_score=None, page=page, page_size=page_size, mode=None)
        found = duplicates.groups(self.index.copies())
        shown = []
        for group in found[(page - 1) * page_size:page * page_size]:
            original = group["original"]
            shown.append({
                "original": {**original, "url": self._url(original["bucket"], original["key"]),
                             "indexed": self.index.get(original["id"], with_vector=False) is not None},
                "copies": [{"id": doc.doc_id, "bucket": doc.bucket, "key": doc.key, "score": doc.duplicate_of["score"],
                            "url": self._url(doc.bucket, doc.key)} for doc in group["copies"]]})
        return {"groups": shown, "total": len(found), "page": page, "page_size": page_size}

    def _url(self, bucket: str, key: str) -> str | None:
        return self.storages.url(bucket, key) if self.storages.allows(bucket) else None

    def image_info(self, bucket: str, key: str) -> dict:
        """What the index knows of an indexed image, and a URL to open it."""
        return {**self.document(bucket, key).metadata(), "url": self.storages.url(bucket, key)}

    def _search(self, vector: np.ndarray, options: SearchOptions, started: float, *,
                query_features: Callable[[], object], exclude_ids: tuple[str, ...] = ()) -> SearchResults:
        if options.collapse:
            return self._collapsed(vector, options, started, query_features=query_features, exclude_ids=exclude_ids)
        return self._ranked(vector, options, started, query_features=query_features, exclude_ids=exclude_ids)

    def _collapsed(self, vector: np.ndarray, options: SearchOptions, started: float, **how) -> SearchResults:
        """One hit per group of copies, the best-ranked of each: the page is cut from a window COLLAPSE_WINDOW
        times deeper, collapsed. total subtracts the copies found in that window (exact when it holds every hit)."""
        wanted = options.offset + options.page_size
        window = min(MAX_RESULT_WINDOW, max(COLLAPSE_WINDOW * wanted, self.settings.rerank_depth))
        ranked = self._ranked(vector, dataclasses.replace(options, page=1, page_size=window, collapse=False), started,
                              **how)
        seen, kept = set(), []
        for hit in ranked.hits:
            group = hit.duplicate_of["id"] if hit.duplicate_of else hit.id
            if group not in seen:
                seen.add(group)
                kept.append(hit)
        return SearchResults(hits=tuple(kept[options.offset:wanted]),
                             total=ranked.total - (len(ranked.hits) - len(kept)), page=options.page,
                             page_size=options.page_size, took_ms=(time.perf_counter() - started) * 1000)

    def _ranked(self, vector: np.ndarray, options: SearchOptions, started: float, *,
                query_features: Callable[[], object], exclude_ids: tuple[str, ...] = ()) -> SearchResults:
        request = SearchRequest(vector=vector, min_score=options.min_score, page=options.page,
                                page_size=options.page_size, mode=options.mode or self.settings.search_mode,
                                key_prefix=options.key_prefix, exclude_ids=exclude_ids, filters=options.filters)
        if not self._reranks(options):
            found = self.index.search(request)
            hits, total = [self._hit(hit) for hit in found.hits], found.total
        # A bar at or below UNVERIFIED_MAX filters nothing (every hit reaches it); above it, only verified can.
        elif options.min_confidence is not None and options.min_confidence > confidence_model.UNVERIFIED_MAX:
            hits, total = self._reranked(request, query_features(), min_confidence=options.min_confidence)
        elif request.offset >= self.settings.rerank_depth:  # past the verified head: the cosine says it all
            found = self.index.search(request)
            hits = [self._hit(hit, confidence=confidence_model.confidence(hit.score, local_features.NO_MATCH))
                    for hit in found.hits]
            total = found.total
        else:
            hits, total = self._reranked(request, query_features())
        return SearchResults(hits=tuple(hits), total=total, page=request.page, page_size=request.page_size,
                             took_ms=(time.perf_counter() - started) * 1000)

    def _reranks(self, options: SearchOptions) -> bool:
        if options.min_confidence is not None:  # only verified hits have a confidence: asking for one verifies
            return True
        return self.settings.rerank if options.rerank is None else options.rerank

    def _reranked(self, request: SearchRequest, query, *, min_confidence: float = 0.0) -> tuple[list[Hit], int]:
        """Verify the best `rerank_depth` candidates geometrically and order them by confidence; the page is then
        cut from that order (hits past the depth follow in the global order, their confidence from the cosine
        alone, never above a verified candidate's: the confidence grows with the cosine and the inliers).
        With min_confidence (above UNVERIFIED_MAX), only verified candidates can reach it: only the head is
        fetched, whatever the page, and the total counts the hits that reach it."""
        depth, min_inliers = self.settings.rerank_depth, self.settings.rerank_min_inliers
        wanted = depth if min_confidence else max(depth, request.offset + request.page_size)
        head = dataclasses.replace(request, page=1, page_size=wanted, with_local_features=True)
        found = self.index.search(head)
        checked = found.hits[:depth]
        matches = (local_features.verify(query, [local_features.decode(h.document.local_features) for h in checked],
                                         min_matches=min_inliers)
                   if query is not None else [local_features.NO_MATCH] * len(checked))
        ranked = sorted(((hit, match, confidence_model.confidence(hit.score, match))
                         for hit, match in zip(checked, matches)), key=lambda scored: -scored[2])  # stable
        ranked += [(hit, None, confidence_model.confidence(hit.score, local_features.NO_MATCH))
                   for hit in found.hits[len(checked):]]
        if min_confidence:
            ranked = [scored for scored in ranked if scored[2] >= min_confidence]
        total = len(ranked) if min_confidence else found.total
        window = ranked[request.offset:request.offset + request.page_size]
        return [self._hit(hit, match, confidence) for hit, match, confidence in window], total

    def _hit(self, hit: ScoredDocument, match: local_features.Match | None = None,
             confidence: float | None = None) -> Hit:
        doc = hit.document
        url = self._url(doc.bucket, doc.key)
        verified = None if match is None else confidence_model.verified(match, self.settings.rerank_min_inliers)
        polygon = (local_features.outline_in_pixels(match.outline, doc.width, doc.height)
                   if verified and doc.width and doc.height else None)
        return Hit(score=round(hit.score, 6), key=doc.key, bucket=doc.bucket, url=url, size=doc.size,
                   width=doc.width, height=doc.height, content_type=doc.content_type, id=doc.doc_id,
                   inliers=None if match is None else match.inliers, verified=verified,
                   confidence=None if confidence is None else round(confidence, 4), match_polygon=polygon,
                   folder=doc.folder, tags=doc.tags, user_metadata=doc.user_metadata, duplicate_of=doc.duplicate_of)
