"""How Elasticsearch is searched: each strategy owns its query body and its conversion of ES's score to cosine
(as elasticsearch-py's vectorstore strategies do), choose_strategy picks one, and search_page runs it.

- ScriptScoreExact: the demo's script_score + cosineSimilarity (needs the painless module).
- KnnSearch: kNN; approximate over hnsw, exact over a flat field (Lucene brute force).
A query of many vectors (an image and its ~70 regions) costs the cluster QUERY_CLAUSES searches at most, in one
request: a few compact vectors stand for it (compact_queries) to find candidates, and every candidate returned is
then scored here by its best cosine over all of the query's vectors, as the embedded index scores every document.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Callable, Protocol

import numpy as np
from elasticsearch import Elasticsearch

from ..errors import ConfigError
from ..options import MAX_RESULT_WINDOW
from .base import ScoredDocument, SearchPage, SearchRequest
from .document import VECTOR_FIELD
from ..whitening import unit_rows
from .es_client import call, floats, from_source

MAX_K = MAX_RESULT_WINDOW  # Elasticsearch's limit for knn k and num_candidates
QUERY_CLAUSES = 4  # kNN searches per many-vector query, whatever its number of regions
_BEST_OF_SCRIPT = (f"double best = -1.0; for (def v : params.vectors) {{ best = Math.max(best, "
                   f"cosineSimilarity(v, '{VECTOR_FIELD}')); }} return best + 1.0;")


class SearchStrategy(Protocol):
    def body(self, request: SearchRequest, filters: list[dict]) -> dict:
        """The search body for one query vector (request.vector is (512,))."""

    def candidates_body(self, vectors: np.ndarray, k: int, filters: list[dict]) -> dict:
        """One search body finding the k documents nearest to each of a few vectors (m, 512): m * k hits at most."""

    def to_cosine(self, score: float) -> float:
        """Elasticsearch's _score of a hit as cosine similarity."""


class ScriptScoreExact:
    """The demo's exact search: script_score with cosineSimilarity over every matching document (needs painless)."""

    def body(self, request: SearchRequest, filters: list[dict]) -> dict:
        body = {
            "query": {"script_score": {
                "query": {"bool": {"filter": filters}} if filters else {"match_all": {}},
                # script_score may not return negatives: shift cosine by +1 here and back in to_cosine().
                "script": {"source": f"cosineSimilarity(params.query_vector, '{VECTOR_FIELD}') + 1.0",
                           "params": {"query_vector": floats(request.vector)}},
            }},
            "from": request.offset, "size": request.page_size, "track_total_hits": True,
        }
        if request.min_score is not None:
            body["min_score"] = request.min_score + 1.0
        return body

    def candidates_body(self, vectors: np.ndarray, k: int, filters: list[dict]) -> dict:
        return {"query": {"script_score": {
            "query": {"bool": {"filter": filters}} if filters else {"match_all": {}},
            "script": {"source": _BEST_OF_SCRIPT, "params": {"vectors": [floats(v) for v in vectors]}},
        }}, "size": len(vectors) * k}

    @staticmethod
    def to_cosine(score: float) -> float:
        return score - 1.0


class KnnSearch:
    """kNN search. Over hnsw it is approximate; over a flat field it is Lucene brute force, i.e. exact."""

    def __init__(self, *, k: int, num_candidates: int):
        self.k, self.num_candidates = k, num_candidates

    def body(self, request: SearchRequest, filters: list[dict]) -> dict:
        knn = {"field": VECTOR_FIELD, "query_vector": floats(request.vector), "k": self.k,
               "num_candidates": self.num_candidates}
        if request.min_score is not None:
            knn["similarity"] = request.min_score  # for cosine, the raw similarity, not the _score
        if filters:
            knn["filter"] = filters
        return {"knn": knn, "from": request.offset, "size": request.page_size}

    def candidates_body(self, vectors: np.ndarray, k: int, filters: list[dict]) -> dict:
        clauses = [{"field": VECTOR_FIELD, "query_vector": floats(v), "k": k,
                    "num_candidates": min(max(k, self.num_candidates), MAX_K), **({"filter": filters} if filters else {})}
                   for v in vectors]
        return {"knn": clauses, "size": len(vectors) * k}  # hits are the union of the clauses' k nearest

    @staticmethod
    def to_cosine(score: float) -> float:
        return 2.0 * score - 1.0  # kNN's _score for cosine is (1 + cos) / 2


def choose_strategy(request: SearchRequest, *, knn_candidates: int, vector_index: str,
                    has_painless: Callable[[], bool]) -> SearchStrategy:
    if request.mode == "knn":
        k = max(request.offset + request.page_size, min(knn_candidates, MAX_K))
        return KnnSearch(k=k, num_candidates=min(max(k, knn_candidates), MAX_K))
    if has_painless():
        return ScriptScoreExact()
    if vector_index in ("flat", "int8_flat"):
        return KnnSearch(k=MAX_K, num_candidates=MAX_K)  # flat = brute force: kNN over it is exact
    raise ConfigError(
        "exact search needs the painless scripting module, which this Elasticsearch lacks; either use a "
        "full Elasticsearch distribution, or create the index with IMGSEARCH_ES_VECTOR_INDEX=flat "
        "(kNN over a flat field is exact)")


def search_page(client: Elasticsearch, index: str, request: SearchRequest, strategy: SearchStrategy, *,
                dim: int, candidates: int) -> SearchPage:
    filters = []
    if request.key_prefix:
        filters.append({"prefix": {"key": request.key_prefix}})
    if request.exclude_ids:
        filters.append({"bool": {"must_not": {"ids": {"values": list(request.exclude_ids)}}}})
    # a tag or metadata name is a sub-field of its flattened field: {"terms": {"tags.color": ["red"]}}
    filters += [{"terms": {f.path: list(f.values)}} for f in request.filters]
    queries = request.queries(dim)  # (R, 512)
    if len(queries) > 1:
        return _search_best_of(client, index, request, queries, strategy, filters, candidates)
    excludes = [VECTOR_FIELD, "descriptors"] + ([] if request.with_local_features else ["local_features"])
    single = dataclasses.replace(request, vector=queries[0])
    response = call(client.search, index=index, source={"excludes": excludes}, **strategy.body(single, filters))
    hits = [ScoredDocument(score=strategy.to_cosine(h["_score"]), document=from_source(h["_source"]))
            for h in response["hits"]["hits"]]
    return SearchPage(hits=hits, total=response["hits"]["total"]["value"], page=request.page,
                      page_size=request.page_size)


def compact_queries(queries: np.ndarray, count: int = QUERY_CLAUSES) -> np.ndarray:
    """A few vectors standing for a query of many (row 0: the image itself, then its regions): itself, the mean
    of its regions, then the regions least like those already chosen. (count, 512) at most."""
    if len(queries) <= count:
        return queries
    regions = queries[1:]  # (R, 512)
    chosen = [queries[0], unit_rows(regions.sum(axis=0))]
    while len(chosen) < count:
        closest = (regions @ np.stack(chosen).T).max(axis=1)  # (R,) each region's best match among the chosen
        chosen.append(regions[int(np.argmin(closest))])
    return np.stack(chosen)


def _search_best_of(client: Elasticsearch, index: str, request: SearchRequest, queries: np.ndarray,
                    strategy: SearchStrategy, filters: list[dict], candidates: int) -> SearchPage:
    """Many query vectors: one search, whose few clauses find the candidates (with their vectors); each
    candidate is scored here by its best cosine over every query vector, then ranked and paged. Local features
    (for re-ranking) are fetched for the page's documents only, in one mget."""
    compact = compact_queries(queries)  # (<= 4, 512)
    k = min(max(request.offset + request.page_size, candidates), MAX_K // len(compact))
    response = call(client.search, index=index, source={"excludes": ["descriptors", "local_features"]},
                    **strategy.candidates_body(compact, k, filters))
    documents = [from_source(h["_source"]) for h in response["hits"]["hits"]]
    if not documents:
        return SearchPage(hits=[], total=0, page=request.page, page_size=request.page_size)
    best = (np.stack([d.vector for d in documents]) @ queries.T).max(axis=1)  # (n,) best cosine per candidate
    ranked = sorted((pair for pair in zip(best.tolist(), documents)
                     if request.min_score is None or pair[0] >= request.min_score),
                    key=lambda pair: (-pair[0], pair[1].doc_id))
    window = ranked[request.offset:request.offset + request.page_size]
    features = {}
    if request.with_local_features and window:
        found = call(client.mget, index=index, ids=[d.doc_id for _, d in window], source_includes=["local_features"])
        features = {doc["_id"]: base64.b64decode(doc["_source"]["local_features"]) for doc in found["docs"]
                    if doc.get("found") and doc["_source"].get("local_features")}
    hits = [ScoredDocument(score, dataclasses.replace(document, local_features=features.get(document.doc_id)))
            for score, document in window]
    return SearchPage(hits=hits, total=len(ranked), page=request.page, page_size=request.page_size)
