"""The Elasticsearch 8 backend: the original demo's index and mapping (document.py's table), upserts by derived
id, bulk writes with retries; searching is es_strategies.py's, the whitening lives in a companion index.
"""

from __future__ import annotations

import base64
import logging
from typing import Iterable, Iterator, Sequence

import elasticsearch
import numpy as np
from elasticsearch import BadRequestError, Elasticsearch, helpers
from elasticsearch import NotFoundError as EsNotFound

from ..config import Settings
from ..errors import BackendUnavailableError, ConfigError, IncompatibleIndexError, PermanentError
from ..labels import Labels
from ..whitening import Whitening
from .base import IndexBackend, IndexEntry, SearchPage, SearchRequest
from .document import BLOB_FIELDS, LABEL_FIELDS, VECTOR_FIELD, ImageDocument, es_mapping
from .es_client import call, floats, from_source, make_client, to_source
from .es_strategies import choose_strategy, search_page

log = logging.getLogger(__name__)

WHITENING_MAPPING = {"dynamic": "strict", "properties": {
    "id": {"type": "keyword"}, "images": {"type": "integer"}, "matrix": {"type": "binary"}}}


class ElasticsearchIndex(IndexBackend):
    name = "elasticsearch"

    def __init__(self, client: Elasticsearch, *, index: str = "search_by_image_index", dim: int = 512,
                 model_id: str, vector_index: str = "hnsw", knn_candidates: int = 100, refresh: bool | str = False):
        self.client = client
        self.index = index
        self.whitening_index = f"{index}_whitening"  # one document: the index's whitening (a 1 MB matrix)
        self.whitenings = EsWhitenings(client, self.whitening_index, dim=dim)
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
        mapping = es_mapping(dim=self.dim, model_id=self.model_id, vector_index=self.vector_index)
        if not self._create(self.index, mapping):
            self._check_existing_mapping(mapping)
        self._create(self.whitening_index, WHITENING_MAPPING)

    def _create(self, index: str, mappings: dict) -> bool:
        """Create an index; False if it already exists (perhaps another process won the race: fine)."""
        try:
            call(self.client.indices.create, index=index, mappings=mappings,
                 settings={"index": {"auto_expand_replicas": "0-1"}})
            return True
        except BadRequestError as exc:
            if exc.error != "resource_already_exists_exception":
                raise PermanentError(f"cannot create index {index}: {exc.message}") from exc
            return False

    def _check_existing_mapping(self, mapping: dict) -> None:
        """Refuse an index of other vectors; add the fields document.py gained since the index was made (adding
        a field to a mapping is allowed, and older documents simply lack it)."""
        found = call(self.client.indices.get_mapping, index=self.index).body
        existing = next(iter(found.values()))["mappings"]
        problems = _mapping_problems(existing, dim=self.dim, model_id=self.model_id)
        if problems:
            raise IncompatibleIndexError(
                f"index {self.index} exists but is incompatible: {'; '.join(problems)}. "
                "Use another IMGSEARCH_ES_INDEX, or delete the index and re-ingest.")
        missing = {name: spec for name, spec in mapping["properties"].items()
                   if name not in existing.get("properties", {})}
        if missing:
            log.info("adding fields %s to index %s", sorted(missing), self.index)
            call(self.client.indices.put_mapping, index=self.index, properties=missing)

    def _check_server_version(self) -> None:
        nodes = call(self.client.nodes.info, node_id="_local", filter_path="nodes.*.version").body
        versions = [n["version"] for n in nodes.get("nodes", {}).values()]
        server_major = int(versions[0].split(".")[0]) if versions else None
        client_major = elasticsearch.__versionstr__.split(".")[0]
        if server_major is not None and str(server_major) != client_major:
            raise ConfigError(f"Elasticsearch server is {versions[0]} but the Python client is "
                              f"{elasticsearch.__versionstr__}; their major versions must match")

    def delete_index(self) -> None:
        call(self.client.indices.delete, index=[self.index, self.whitening_index], ignore_unavailable=True)

    # -- writes ---------------------------------------------------------------------------------------------
    def upsert(self, documents: Sequence[ImageDocument]) -> None:
        actions = []
        for doc in documents:
            self.checked_vector(doc)
            actions.append({"_op_type": "index", "_index": self.index, "_id": doc.doc_id, "_source": to_source(doc)})
        self._bulk(actions, "index")

    def _bulk(self, actions: list[dict], op: str) -> None:
        if actions:
            _bulk(self.client, actions, op, refresh=self.refresh_on_write)

    def delete(self, doc_ids: Iterable[str]) -> int:
        actions = [{"_op_type": "delete", "_index": self.index, "_id": i} for i in doc_ids]
        if not actions:
            return 0
        ok, errors = call(lambda: helpers.bulk(self.client, actions, raise_on_error=False, max_retries=3,
                                               refresh=self.refresh_on_write))
        other = [e for e in errors if e.get("delete", {}).get("status") != 404]  # 404: already gone, fine
        if other:
            raise BackendUnavailableError(f"{len(other)} deletions failed: {other[0]}")
        return ok

    def set_vectors(self, updates: Sequence[tuple[str, np.ndarray, str]]) -> None:
        actions = [{"_op_type": "update", "_index": self.index, "_id": did,
                    "doc": {VECTOR_FIELD: floats(vector), "whitening": whitening}}
                   for did, vector, whitening in updates]
        self._bulk(actions, "update")

    def set_labels(self, updates: Sequence[tuple[str, Labels]]) -> None:
        # An update's doc is merged into the stored one, maps key by key, so a removed tag would survive it: the
        # labels are nulled first (a null replaces a map), then written, by two updates of one bulk, in order.
        actions = [{"_op_type": "update", "_index": self.index, "_id": did, "doc": doc}
                   for did, labels in updates
                   for doc in ({name: None for name in LABEL_FIELDS},
                               {name: getattr(labels, name) for name in LABEL_FIELDS})]
        self._bulk(actions, "update")

    def refresh(self) -> None:
        call(self.client.indices.refresh, index=self.index)

    # -- reads ----------------------------------------------------------------------------------------------
    def descriptor_sets(self, *, stale_for: str | None = None) -> Iterator[tuple[str, bytes]]:
        # binary fields are not indexed, so documents without descriptors are skipped here, not in the query
        scan = helpers.scan(self.client, index=self.index, query={"query": _stale_query(stale_for)}, size=200,
                            _source=["descriptors"])
        while True:  # a generator: errors surface one page at a time, translated like every other call
            hit = call(next, scan, None)
            if hit is None:
                return
            if hit["_source"].get("descriptors"):
                yield hit["_id"], base64.b64decode(hit["_source"]["descriptors"])

    def copies(self) -> Iterator[ImageDocument]:
        hits = call(lambda: list(helpers.scan(self.client, index=self.index, size=1000,
                                              query={"query": {"exists": {"field": "duplicate_of.id"}}},
                                              _source={"excludes": [VECTOR_FIELD, *BLOB_FIELDS]})))
        return iter([from_source(h["_source"]) for h in hits])

    def get(self, doc_id: str, *, with_vector: bool = True) -> ImageDocument | None:
        excludes = ["descriptors"] if with_vector else [VECTOR_FIELD, *BLOB_FIELDS]
        try:
            found = call(self.client.get, index=self.index, id=doc_id, source_excludes=excludes)
        except EsNotFound:
            return None
        return from_source(found["_source"])

    def count(self, *, stale_for: str | None = None) -> int:
        return call(self.client.count, index=self.index, query=_stale_query(stale_for))["count"]

    def entries(self, bucket: str | None = None) -> Iterator[IndexEntry]:
        query = {"query": {"term": {"bucket": bucket}}} if bucket is not None else {"query": {"match_all": {}}}
        hits = call(lambda: list(helpers.scan(self.client, index=self.index, query=query, size=1000,
                                              _source=["bucket", "key", "etag", "model_id", "folder"])))
        return iter([IndexEntry(h["_id"], h["_source"]["bucket"], h["_source"]["key"], h["_source"].get("etag"),
                                h["_source"]["model_id"], labelled=h["_source"].get("folder") is not None)
                     for h in hits])

    def search(self, request: SearchRequest) -> SearchPage:
        strategy = choose_strategy(request, knn_candidates=self.knn_candidates, vector_index=self.vector_index,
                                   has_painless=self.has_painless)
        return search_page(self.client, self.index, request, strategy, dim=self.dim, candidates=self.knn_candidates)

    def has_painless(self) -> bool:
        if self._has_painless is None:
            nodes = call(self.client.nodes.info, node_id="_local", filter_path="nodes.*.modules.name").body
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


class EsWhitenings:
    """The index's whitening: one document of a companion index (a WhiteningStore)."""

    def __init__(self, client: Elasticsearch, index: str, *, dim: int):
        self.client, self.index, self.dim = client, index, dim

    def info(self) -> tuple[str, int] | None:
        found = self._source(["id", "images"])
        return (found["id"], found["images"]) if found else None

    def load(self) -> Whitening | None:
        found = self._source(None)
        return Whitening.from_bytes(base64.b64decode(found["matrix"]), found["id"], found["images"],
                                    dim=self.dim) if found else None

    def save(self, whitening: Whitening) -> None:
        call(self.client.index, index=self.index, id="whitening", refresh=True,
             document={"id": whitening.id, "images": whitening.images,
                       "matrix": base64.b64encode(whitening.to_bytes()).decode("ascii")})

    def _source(self, fields: list[str] | None) -> dict | None:
        try:  # a get by id is real-time: no refresh needed after a save
            return call(self.client.get, index=self.index, id="whitening", source_includes=fields)["_source"]
        except EsNotFound:
            return None


def _mapping_problems(mappings: dict, *, dim: int, model_id: str) -> list[str]:
    """What makes an existing index unfit for our vectors (empty: it fits)."""
    vector = mappings.get("properties", {}).get(VECTOR_FIELD, {})
    problems = []
    if vector.get("type") != "dense_vector" or vector.get("dims") != dim:
        problems.append(f"{VECTOR_FIELD} is {vector.get('type')} with dims {vector.get('dims')}, "
                        f"not dense_vector {dim}")
    if vector.get("similarity") not in (None, "cosine"):
        problems.append(f"similarity is {vector.get('similarity')}, not cosine")
    found_model = mappings.get("_meta", {}).get("model_id")
    if found_model != model_id:
        problems.append(f"it holds vectors of model {found_model!r}, not {model_id!r}")
    return problems


def _bulk(client: Elasticsearch, actions: list[dict], op: str, *, refresh: bool | str) -> None:
    """Bulk index or update; leftover 429/5xx -> BackendUnavailableError, other failures -> PermanentError."""
    # bulk retries 429s itself with capped backoff; the transport retries 502/503/504 and timeouts.
    failed = call(lambda: helpers.bulk(client, actions, chunk_size=200, max_retries=3, initial_backoff=1,
                                       max_backoff=10, raise_on_error=False, refresh=refresh)[1])
    statuses = {item.get(op, {}).get("status") for item in failed}
    if op == "update":  # 404: deleted meanwhile; 409: written meanwhile (a new upload, another worker's
        # re-derivation): in both cases the other write is the newer one and wins
        failed = [item for item in failed if item.get(op, {}).get("status") not in (404, 409)]
    if failed:
        reasons = "; ".join(str(item.get(op, {}).get("error", {}).get("reason")) for item in failed[:3])
        if statuses & {429, 500, 502, 503, 504}:
            raise BackendUnavailableError(f"{len(failed)} documents not written (Elasticsearch busy): {reasons}")
        raise PermanentError(f"{len(failed)} documents rejected by Elasticsearch: {reasons}")


def _stale_query(stale_for: str | None) -> dict:
    if stale_for is None:
        return {"match_all": {}}
    return {"bool": {"filter": [{"exists": {"field": "whitening"}}], "must_not": [{"term": {"whitening": stale_for}}]}}
