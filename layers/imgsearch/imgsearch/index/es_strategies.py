"""How Elasticsearch is searched: each strategy owns its query body and its conversion of ES's score to cosine
(as elasticsearch-py's vectorstore strategies do), choose_strategy picks one, and search_page runs it.

- ScriptScoreExact: the demo's script_score + cosineSimilarity (needs the painless module).
- KnnSearch: kNN; approximate over hnsw, exact over a flat field (Lucene brute force).
Several query vectors (an image and its regions) are one request each in an _msearch, merged by best score.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np
from elasticsearch import Elasticsearch

from ..errors import BackendUnavailableError, ConfigError, PermanentError
from ..options import MAX_RESULT_WINDOW
from .base import ScoredDocument, SearchPage, SearchRequest
from .document import VECTOR_FIELD
from .es_client import call, floats, from_source

MAX_K = MAX_RESULT_WINDOW  # Elasticsearch's limit for knn k and num_candidates


class SearchStrategy(Protocol):
    def body(self, request: SearchRequest, filters: list[dict]) -> dict:
        """The search body for one query vector (request.vector is (512,))."""

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
                dim: int) -> SearchPage:
    filters = []
    if request.key_prefix:
        filters.append({"prefix": {"key": request.key_prefix}})
    if request.exclude_ids:
        filters.append({"bool": {"must_not": {"ids": {"values": list(request.exclude_ids)}}}})
    excludes = [VECTOR_FIELD, "descriptors"] + ([] if request.with_local_features else ["local_features"])
    queries = request.queries(dim)  # (R, 512)
    if len(queries) > 1:
        return _search_best_of(client, index, request, queries, strategy, filters, excludes)
    single = dataclasses.replace(request, vector=queries[0])
    response = call(client.search, index=index, source={"excludes": excludes}, **strategy.body(single, filters))
    hits = [ScoredDocument(score=strategy.to_cosine(h["_score"]), document=from_source(h["_source"]))
            for h in response["hits"]["hits"]]
    return SearchPage(hits=hits, total=response["hits"]["total"]["value"], page=request.page,
                      page_size=request.page_size)


def _search_best_of(client: Elasticsearch, index: str, request: SearchRequest, queries: np.ndarray,
                    strategy: SearchStrategy, filters: list[dict], excludes: list[str]) -> SearchPage:
    """Several query vectors: one request each in an _msearch, merged by each document's best score. A
    document in the merged top n is in the top n of the vector it scores best with, so the page is right;
    total counts the distinct documents the requests returned. The requests return ids and scores only
    (a real query has ~140 vectors): the page's documents are fetched once, afterwards."""
    top = dataclasses.replace(request, page=1, page_size=request.offset + request.page_size)
    searches = []
    for query in queries:
        searches += [{"index": index},
                     {**strategy.body(dataclasses.replace(top, vector=query), filters), "_source": False}]
    best: dict[str, float] = {}
    for response in call(client.msearch, searches=searches)["responses"]:
        if "error" in response:
            status = response.get("status", 500)
            error = BackendUnavailableError if status >= 500 or status == 429 else PermanentError
            raise error(f"Elasticsearch error {status}: {response['error']}")
        for h in response["hits"]["hits"]:
            best[h["_id"]] = max(best.get(h["_id"], -2.0), strategy.to_cosine(h["_score"]))
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    window = ranked[request.offset:request.offset + request.page_size]
    found = call(client.mget, index=index, ids=[i for i, _ in window],
                 source_excludes=excludes)["docs"] if window else []
    sources = {doc["_id"]: doc["_source"] for doc in found if doc.get("found")}  # deleted meanwhile: dropped
    hits = [ScoredDocument(score=score, document=from_source(sources[i])) for i, score in window if i in sources]
    return SearchPage(hits=hits, total=len(ranked), page=request.page, page_size=request.page_size)
