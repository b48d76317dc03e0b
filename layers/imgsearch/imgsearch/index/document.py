"""The indexed document and THE table of its fields: every backend builds its schema, writer and reader from it.

A field is declared once, below, with its Python type (the annotation), its Elasticsearch mapping and its SQLite
column type. Adding a field means adding one line here; ensure_index adds a new optional field to an existing
index (Elasticsearch: put_mapping; embedded: ALTER TABLE), and documents indexed before carry none until re-indexed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from ..labels import Labels

KEYWORD = {"type": "keyword"}
FLATTENED = {"type": "flattened"}  # {name: value} pairs, each value a keyword: tags.color is a field to filter on
ORIGINAL = {"properties": {"id": KEYWORD, "bucket": KEYWORD, "key": KEYWORD, "score": {"type": "float"}}}
VECTOR_FIELD = "feature_vector"  # the original demo's names: file_name (the key) + feature_vector
META, BLOB, VECTOR = "metadata", "blob", "vector"  # blobs (bytes) are only read when asked for


def doc_id(bucket: str, key: str) -> str:
    """The document id of an object: the same object always maps to the same document, so re-ingest upserts."""
    # Bucket names cannot contain "/", so "bucket/key" is unambiguous; hashing bounds the length (ES ids <= 512 B).
    return hashlib.sha256(f"{bucket}/{key}".encode("utf-8")).hexdigest()[:40]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _column(es: dict | None, sql: str, kind: str = META, *, as_json: bool = False, **default):
    """as_json: a dict, kept as JSON text in SQLite."""
    return field(metadata={"es": es, "sql": sql, "kind": kind, "json": as_json}, **default)


@dataclass(frozen=True)
class ImageDocument:
    """One indexed image: where it lives, its vector and what we knew about it when we indexed it."""

    bucket: str = _column(KEYWORD, "TEXT NOT NULL")
    key: str = _column(KEYWORD, "TEXT NOT NULL")
    vector: np.ndarray = _column(None, "BLOB NOT NULL", VECTOR)  # (512,) float32, unit length; mapped by mapping()
    model_id: str = _column(KEYWORD, "TEXT NOT NULL")
    etag: str | None = _column(KEYWORD, "TEXT", default=None)
    size: int | None = _column({"type": "long"}, "INTEGER", default=None)
    width: int | None = _column({"type": "integer"}, "INTEGER", default=None)
    height: int | None = _column({"type": "integer"}, "INTEGER", default=None)
    content_type: str | None = _column(KEYWORD, "TEXT", default=None)
    whitening: str | None = _column(KEYWORD, "TEXT", default=None)  # id of the whitening `vector` was made with
    indexed_at: str = _column({"type": "date"}, "TEXT NOT NULL", default_factory=utc_now)
    # the bucket's own labels (labels.Labels), for filters; None in documents indexed before they were kept
    folder: str | None = _column(KEYWORD, "TEXT", default=None)
    tags: dict[str, str] | None = _column(FLATTENED, "TEXT", as_json=True, default=None)
    user_metadata: dict[str, str] | None = _column(FLATTENED, "TEXT", as_json=True, default=None)
    # a copy (duplicates.py): its group's original {id, bucket, key} and the cosine to the image it matched (score)
    duplicate_of: dict | None = _column(ORIGINAL, "TEXT", as_json=True, default=None)
    # binary: not indexed, no doc values. Compact keypoints + descriptors for geometric re-ranking:
    local_features: bytes | None = _column({"type": "binary"}, "BLOB", BLOB, default=None)
    # DescriptorSet: the raw vector and regions, to re-whiten without the network
    descriptors: bytes | None = _column({"type": "binary"}, "BLOB", BLOB, default=None)

    @property
    def doc_id(self) -> str:
        return doc_id(self.bucket, self.key)

    def has_labels(self, labels: Labels) -> bool:
        """Whether the document carries exactly these labels (one indexed before labels were kept has none)."""
        return (self.folder, self.tags, self.user_metadata) == (labels.folder, labels.tags, labels.user_metadata)

    def metadata(self) -> dict:
        """Everything but the vector and the blobs, as JSON-ready values."""
        return {"id": self.doc_id, **{name: getattr(self, name) for name in META_FIELDS}}


FIELDS = tuple(dataclasses.fields(ImageDocument))
META_FIELDS = tuple(f.name for f in FIELDS if f.metadata["kind"] == META)
BLOB_FIELDS = tuple(f.name for f in FIELDS if f.metadata["kind"] == BLOB)
JSON_FIELDS = tuple(f.name for f in FIELDS if f.metadata["json"])
LABEL_FIELDS = ("folder", "tags", "user_metadata")  # what set_labels writes


def es_mapping(*, dim: int, model_id: str, vector_index: str) -> dict:
    """The Elasticsearch mapping (the demo's file_name + feature_vector, then every field of the table)."""
    return {
        "_meta": {"model_id": model_id, "dims": dim, "created_by": "imgsearch"},
        "dynamic": "strict",
        "properties": {
            "file_name": KEYWORD,
            # index_options always explicit: since 8.14 an omitted one silently becomes int8_hnsw.
            VECTOR_FIELD: {"type": "dense_vector", "dims": dim, "index": True, "similarity": "cosine",
                           "index_options": {"type": vector_index}},
            **{f.name: dict(f.metadata["es"]) for f in FIELDS if f.metadata["es"] is not None},
        },
    }


def sql_columns() -> str:
    """The SQLite documents table's columns (doc_id first)."""
    return ",\n    ".join(["doc_id TEXT PRIMARY KEY"] + [f"{f.name} {f.metadata['sql']}" for f in FIELDS])
