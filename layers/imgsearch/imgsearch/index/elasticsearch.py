"""The Elasticsearch 8 backend: the original demo's index and mapping, upserts by derived id, and two search
strategies that each own their query and report cosine similarity as the score.

The client's major version must match the server's (8): pinned in pyproject.toml and checked at ensure_index.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..config import Settings
from ..errors import (BackendUnavailableError, ConfigError, IncompatibleIndexError, InvalidRequestError,
                      PermanentError)
from ..whitening import Whitening
from .base import Hit, ImageDocument, IndexBackend, IndexEntry, SearchPage, SearchRequest

log = logging.getLogger(__name__)

VECTOR_FIELD = "feature_vector"  # the demo's names: file_name + feature_vector
MAX_K = 10_000  # Elasticsearch's limit for knn k and num_candidates
_META_FIELDS = ["bucket", "key", "etag", "size", "width", "height", "content_type", "model_id", "whitening",
                "indexed_at"]
_BLOB_FIELDS = ["local_features", "descriptors"]  # never needed by a plain search
WHITENING_MAPPING = {"dynamic": "strict", "properties": {
    "id": {"type": "keyword"}, "images": {"type": "integer"}, "matrix": {"type": "binary"}}}


def mapping(*, dim: int, model_id: str, vector_index: str) -> dict:
    return {
        "_meta": {"model_id": model_id, "dims": dim, "created_by": "imgsearch"},
        "dynamic": "strict",
        "properties": {
            "file_name": {"type": "keyword"},
            # index_options always explicit: since 8.14 an omitted one silently becomes int8_hnsw.
            VECTOR_FIELD: {"type": "dense_vector", "dims": dim, "index": True, "similarity": "cosine",
                           "index_options": {"type": vector_index}},
            "bucket": {"type": "keyword"},
            "key": {"type": "keyword"},
            "etag": {"type": "keyword"},
            "size": {"type": "long"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "content_type": {"type": "keyword"},
            "model_id": {"type": "keyword"},
            "indexed_at": {"type": "date"},
            "whitening": {"type": "keyword"},
            # binary: not indexed, no doc values; local features for re-ranking, descriptors for re-whitening
            "local_features": {"type": "binary"},
            "descriptors": {"type": "binary"},
        },
    }


class ScriptScoreExact:
    """The demo's exact search: script_score with cosineSimilarity over every matching document (needs painless)."""

    def body(self, request: SearchRequest, filters: list[dict]) -> dict:
        body = {
            "query": {"script_score": {
                "query": {"bool": {"filter": filters}} if filters else {"match_all": {}},
                # script_score may not return negatives: shift cosine by +1 here and back in to_cosine().
                "script": {"source": f"cosineSimilarity(params.query_vector, '{VECTOR_FIELD}') + 1.0",
                           "params": {"query_vector": _floats(request.vector)}},
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
        knn = {"field": VECTOR_FIELD, "query_vector": _floats(request.vector), "k": self.k,
               "num_candidates": self.num_candidates}
        if request.min_score is not None:
            knn["similarity"] = request.min_score  # for cosine, the raw similarity, not the _score
        if filters:
            knn["filter"] = filters
        return {"knn": knn, "from": request.offset, "size": request.page_size}

    @staticmethod
    def to_cosine(score: float) -> float:
        return 2.0 * score - 1.0  # kNN's _score for cosine is (1 + cos) / 2


class ElasticsearchIndex(IndexBackend):
    name = "elasticsearch"

    def __init__(self, client, *, index: str = "search_by_image_index", dim: int = 512, model_id: str,
                 vector_index: str = "hnsw", knn_candidates: int = 100, refresh: bool | str = False):
        self.client = client
        self.index = index
        self.whitening_index = f"{index}_whitening"  # one document: the index's whitening (a 1 MB matrix)
        self.dim = dim
        self.model_id = model_id
        self.vector_index = vector_index
        self.knn_candidates = knn_candidates
        self.refresh_on_write = refresh
        self._has_painless: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, model_id: str, dim: int = 512) -> "ElasticsearchIndex":
        return cls(make_client(settings), index=settings.es_index, dim=dim, model_id=model_id,
                   vector_index=settings.es_vector_index, knn_candidates=settings.knn_candidates)

    # -- index lifecycle -----------------------------------------------------------------------------------
    def ensure_index(self) -> None:
        self._check_server_version()
        if not self._create(self.index, mapping(dim=self.dim, model_id=self.model_id, vector_index=self.vector_index)):
            self._check_existing_mapping()
        self._create(self.whitening_index, WHITENING_MAPPING)

    def _create(self, index: str, mappings: dict) -> bool:
        """Create an index; False if it already exists (perhaps another process won the race: fine)."""
        from elasticsearch import BadRequestError

        try:
            self._call(self.client.indices.create, index=index, mappings=mappings,
                       settings={"index": {"auto_expand_replicas": "0-1"}})
            return True
        except BadRequestError as exc:
            if exc.error != "resource_already_exists_exception":
                raise PermanentError(f"cannot create index {index}: {exc.message}") from exc
            return False

    def _check_existing_mapping(self) -> None:
        found = self._call(self.client.indices.get_mapping, index=self.index).body
        mappings = next(iter(found.values()))["mappings"]
        vector = mappings.get("properties", {}).get(VECTOR_FIELD, {})
        meta = mappings.get("_meta", {})
        problems = []
        if vector.get("type") != "dense_vector" or vector.get("dims") != self.dim:
            problems.append(f"{VECTOR_FIELD} is {vector.get('type')} with dims {vector.get('dims')}, not dense_vector {self.dim}")
        if vector.get("similarity") not in (None, "cosine"):
            problems.append(f"similarity is {vector.get('similarity')}, not cosine")
        if meta.get("model_id") != self.model_id:
            problems.append(f"it holds vectors of model {meta.get('model_id')!r}, not {self.model_id!r}")
        if problems:
            raise IncompatibleIndexError(
                f"index {self.index} exists but is incompatible: {'; '.join(problems)}. "
                "Use another IMGSEARCH_ES_INDEX, or delete the index and re-ingest.")

    def _check_server_version(self) -> None:
        import elasticsearch

        nodes = self._call(self.client.nodes.info, node_id="_local", filter_path="nodes.*.version").body
        versions = [n["version"] for n in nodes.get("nodes", {}).values()]
        server_major = int(versions[0].split(".")[0]) if versions else None
        client_major = elasticsearch.__versionstr__.split(".")[0]
        if server_major is not None and str(server_major) != client_major:
            raise ConfigError(f"Elasticsearch server is {versions[0]} but the Python client is "
                              f"{elasticsearch.__versionstr__}; their major versions must match")

    def delete_index(self) -> None:
        self._call(self.client.indices.delete, index=[self.index, self.whitening_index], ignore_unavailable=True)

    # -- writes ---------------------------------------------------------------------------------------------
    def upsert(self, documents: Sequence[ImageDocument]) -> None:
        actions = []
        for doc in documents:
            self.checked_vector(doc)
            actions.append({"_op_type": "index", "_index": self.index, "_id": doc.doc_id, "_source": _source(doc)})
        self._bulk(actions, "index")

    def _bulk(self, actions: list[dict], op: str) -> None:
        from elasticsearch import helpers

        if not actions:
            return
        # bulk retries 429s itself with capped backoff; the transport retries 502/503/504 and timeouts.
        failed = self._call(lambda: helpers.bulk(self.client, actions, chunk_size=200, max_retries=3,
                                                 initial_backoff=1, max_backoff=10, raise_on_error=False,
                                                 refresh=self.refresh_on_write)[1])
        statuses = {item.get(op, {}).get("status") for item in failed}
        if op == "update":  # 404: deleted meanwhile, nothing left to update
            failed = [item for item in failed if item.get(op, {}).get("status") != 404]
        if failed:
            reasons = "; ".join(str(item.get(op, {}).get("error", {}).get("reason")) for item in failed[:3])
            if statuses & {429, 500, 502, 503, 504}:
                raise BackendUnavailableError(f"{len(failed)} documents not written (Elasticsearch busy): {reasons}")
            raise PermanentError(f"{len(failed)} documents rejected by Elasticsearch: {reasons}")

    def delete(self, doc_ids: Iterable[str]) -> int:
        from elasticsearch import helpers

        actions = [{"_op_type": "delete", "_index": self.index, "_id": i} for i in doc_ids]
        if not actions:
            return 0
        ok, errors = self._call(lambda: helpers.bulk(self.client, actions, raise_on_error=False, max_retries=3,
                                                     refresh=self.refresh_on_write))
        other = [e for e in errors if e.get("delete", {}).get("status") != 404]  # 404: already gone, fine
        if other:
            raise BackendUnavailableError(f"{len(other)} deletions failed: {other[0]}")
        return ok

    def set_vectors(self, updates: Sequence[tuple[str, np.ndarray, str]]) -> None:
        actions = [{"_op_type": "update", "_index": self.index, "_id": did,
                    "doc": {VECTOR_FIELD: _floats(vector), "whitening": whitening}}
                   for did, vector, whitening in updates]
        self._bulk(actions, "update")

    def refresh(self) -> None:
        self._call(self.client.indices.refresh, index=self.index)

    # -- whitening ------------------------------------------------------------------------------------------
    def whitening_info(self) -> tuple[str, int] | None:
        found = self._whitening_source(["id", "images"])
        return (found["id"], found["images"]) if found else None

    def load_whitening(self) -> Whitening | None:
        found = self._whitening_source(None)
        return Whitening.from_bytes(base64.b64decode(found["matrix"]), found["id"], found["images"],
                                    dim=self.dim) if found else None

    def _whitening_source(self, fields: list[str] | None) -> dict | None:
        from elasticsearch import NotFoundError as EsNotFound

        try:  # a get by id is real-time: no refresh needed after a save
            return self._call(self.client.get, index=self.whitening_index, id="whitening",
                              source_includes=fields)["_source"]
        except EsNotFound:
            return None

    def save_whitening(self, whitening: Whitening) -> None:
        self._call(self.client.index, index=self.whitening_index, id="whitening", refresh=True,
                   document={"id": whitening.id, "images": whitening.images,
                             "matrix": base64.b64encode(whitening.to_bytes()).decode("ascii")})

    def descriptor_sets(self, *, stale_for: str | None = None) -> Iterator[tuple[str, bytes]]:
        from elasticsearch import helpers

        # binary fields are not indexed, so documents without descriptors are skipped here, not in the query
        scan = helpers.scan(self.client, index=self.index, query={"query": _stale_query(stale_for)}, size=200,
                            _source=["descriptors"])
        while True:  # a generator: errors surface one page at a time, translated like every other call
            hit = self._call(next, scan, None)
            if hit is None:
                return
            if hit["_source"].get("descriptors"):
                yield hit["_id"], base64.b64decode(hit["_source"]["descriptors"])

    # -- reads ----------------------------------------------------------------------------------------------
    def get(self, doc_id: str, *, with_vector: bool = True) -> ImageDocument | None:
        from elasticsearch import NotFoundError as EsNotFound

        excludes = ["descriptors"] if with_vector else [VECTOR_FIELD] + _BLOB_FIELDS
        try:
            found = self._call(self.client.get, index=self.index, id=doc_id, source_excludes=excludes)
        except EsNotFound:
            return None
        return _document(found["_source"])

    def count(self, *, stale_for: str | None = None) -> int:
        return self._call(self.client.count, index=self.index, query=_stale_query(stale_for))["count"]

    def entries(self, bucket: str | None = None) -> Iterator[IndexEntry]:
        from elasticsearch import helpers

        query = {"query": {"term": {"bucket": bucket}}} if bucket is not None else {"query": {"match_all": {}}}
        hits = self._call(lambda: list(helpers.scan(self.client, index=self.index, query=query, size=1000,
                                                    _source=["bucket", "key", "etag", "model_id"])))
        return iter([IndexEntry(h["_id"], h["_source"]["bucket"], h["_source"]["key"], h["_source"].get("etag"),
                                h["_source"]["model_id"]) for h in hits])

    def search(self, request: SearchRequest) -> SearchPage:
        strategy = self._strategy(request)
        filters = []
        if request.key_prefix:
            filters.append({"prefix": {"key": request.key_prefix}})
        if request.exclude_ids:
            filters.append({"bool": {"must_not": {"ids": {"values": list(request.exclude_ids)}}}})
        excludes = [VECTOR_FIELD, "descriptors"] + ([] if request.with_local_features else ["local_features"])
        source = {"excludes": excludes}
        queries = request.queries(self.dim)  # (R, 512)
        if len(queries) == 1:
            single = dataclasses.replace(request, vector=queries[0])
            response = self._call(self.client.search, index=self.index, source=source,
                                  **strategy.body(single, filters))
            hits = [Hit(score=strategy.to_cosine(h["_score"]), document=_document(h["_source"]))
                    for h in response["hits"]["hits"]]
            return SearchPage(hits=hits, total=response["hits"]["total"]["value"], page=request.page,
                              page_size=request.page_size)
        return self._search_best_of(request, queries, strategy, filters, source)

    def _search_best_of(self, request: SearchRequest, queries: np.ndarray, strategy, filters, source) -> SearchPage:
        """Several query vectors: one request each in an _msearch, merged by each document's best score. A
        document in the merged top n is in the top n of the vector it scores best with, so the page is right;
        total counts the distinct documents the requests returned. The requests return ids and scores only
        (a real query has ~140 vectors): the page's documents are fetched once, afterwards."""
        top = dataclasses.replace(request, page=1, page_size=request.offset + request.page_size)
        searches = []
        for query in queries:
            searches += [{"index": self.index},
                         {**strategy.body(dataclasses.replace(top, vector=query), filters), "_source": False}]
        best: dict[str, float] = {}
        for response in self._call(self.client.msearch, searches=searches)["responses"]:
            if "error" in response:
                status = response.get("status", 500)
                error = BackendUnavailableError if status >= 500 or status == 429 else PermanentError
                raise error(f"Elasticsearch error {status}: {response['error']}")
            for h in response["hits"]["hits"]:
                best[h["_id"]] = max(best.get(h["_id"], -2.0), strategy.to_cosine(h["_score"]))
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        window = ranked[request.offset:request.offset + request.page_size]
        found = self._call(self.client.mget, index=self.index, ids=[i for i, _ in window],
                           source_excludes=source["excludes"])["docs"] if window else []
        sources = {doc["_id"]: doc["_source"] for doc in found if doc.get("found")}  # deleted meanwhile: dropped
        hits = [Hit(score=score, document=_document(sources[i])) for i, score in window if i in sources]
        return SearchPage(hits=hits, total=len(ranked), page=request.page, page_size=request.page_size)

    def _strategy(self, request: SearchRequest):
        end = request.offset + request.page_size
        if end > MAX_K:
            raise InvalidRequestError(f"page * page_size may be at most {MAX_K} on Elasticsearch, got {end}")
        if request.mode == "knn":
            k = max(end, min(self.knn_candidates, MAX_K))
            return KnnSearch(k=k, num_candidates=min(max(k, self.knn_candidates), MAX_K))
        if self.has_painless():
            return ScriptScoreExact()
        if self.vector_index in ("flat", "int8_flat"):
            return KnnSearch(k=MAX_K, num_candidates=MAX_K)  # flat = brute force: kNN over it is exact
        raise ConfigError(
            "exact search needs the painless scripting module, which this Elasticsearch lacks; either use a "
            "full Elasticsearch distribution, or create the index with IMGSEARCH_ES_VECTOR_INDEX=flat "
            "(kNN over a flat field is exact)")

    def has_painless(self) -> bool:
        if self._has_painless is None:
            nodes = self._call(self.client.nodes.info, node_id="_local", filter_path="nodes.*.modules.name").body
            modules = {m["name"] for n in nodes.get("nodes", {}).values() for m in n.get("modules", [])}
            self._has_painless = "lang-painless" in modules
        return self._has_painless

    def health(self) -> dict:
        try:
            health = self.client.options(request_timeout=5).cluster.health()
            exists = bool(self.client.indices.exists(index=self.index))
            return {"ok": health["status"] in ("green", "yellow") and exists, "backend": self.name,
                    "cluster": health["status"], "index": self.index, "index_exists": exists}
        except Exception as exc:
            return {"ok": False, "backend": self.name, "index": self.index, "error": str(exc)}

    def close(self) -> None:
        self.client.close()

    def _call(self, method, *args, **kwargs):
        """Run a client call; connection problems and 429/5xx become BackendUnavailableError."""
        from elasticsearch import ApiError, TransportError

        try:
            return method(*args, **kwargs)
        except TransportError as exc:  # connection refused, timeout, TLS: nothing answered
            raise BackendUnavailableError(f"Elasticsearch unreachable: {exc}") from exc
        except ApiError as exc:
            if exc.meta.status in (429, 500, 502, 503, 504):
                raise BackendUnavailableError(f"Elasticsearch error {exc.meta.status}: {exc.message}") from exc
            raise


def make_client(settings: Settings):
    from elasticsearch import Elasticsearch

    options = {"request_timeout": settings.es_timeout, "max_retries": settings.es_retries, "retry_on_timeout": True,
               "retry_on_status": (502, 503, 504), "verify_certs": settings.es_verify_certs}
    if settings.es_api_key:
        options["api_key"] = settings.es_api_key
    elif settings.es_username:
        options["basic_auth"] = (settings.es_username, settings.es_password or "")
    if settings.es_ca_file:
        options["ca_certs"] = settings.es_ca_file
    return Elasticsearch(list(settings.es_urls), **options)


def _stale_query(stale_for: str | None) -> dict:
    if stale_for is None:
        return {"match_all": {}}
    return {"bool": {"filter": [{"exists": {"field": "whitening"}}], "must_not": [{"term": {"whitening": stale_for}}]}}


def _floats(vector) -> list[float]:
    return np.asarray(vector, dtype=np.float32).astype(float).tolist()


def _source(doc: ImageDocument) -> dict:
    source = {"file_name": doc.key, VECTOR_FIELD: _floats(doc.vector), "bucket": doc.bucket, "key": doc.key,
              "etag": doc.etag, "size": doc.size, "width": doc.width, "height": doc.height,
              "content_type": doc.content_type, "model_id": doc.model_id, "whitening": doc.whitening,
              "indexed_at": doc.indexed_at}
    for name in _BLOB_FIELDS:
        if getattr(doc, name) is not None:
            source[name] = base64.b64encode(getattr(doc, name)).decode("ascii")
    return source


def _document(source: dict) -> ImageDocument:
    vector = source.get(VECTOR_FIELD)
    local = source.get("local_features")
    return ImageDocument(
        vector=np.asarray(vector, dtype=np.float32) if vector is not None else np.zeros(0, dtype=np.float32),
        local_features=base64.b64decode(local) if local else None,
        **{name: source.get(name) for name in _META_FIELDS})
