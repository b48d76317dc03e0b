"""The index contract every backend implements (embedded, Elasticsearch).

tests/contract/ holds the suite any backend must pass. Scores are always cosine similarity in [-1, 1],
whatever the backend computes internally.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import IncompatibleIndexError, InvalidRequestError
from ..whitening import Whitening


def doc_id(bucket: str, key: str) -> str:
    """The document id of an object: the same object always maps to the same document, so re-ingest upserts."""
    # Bucket names cannot contain "/", so "bucket/key" is unambiguous; hashing bounds the length (ES ids <= 512 B).
    return hashlib.sha256(f"{bucket}/{key}".encode("utf-8")).hexdigest()[:40]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ImageDocument:
    """One indexed image: where it lives, its vector and what we knew about it when we indexed it."""

    bucket: str
    key: str
    vector: np.ndarray  # (512,) float32, unit length
    model_id: str
    etag: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    indexed_at: str = field(default_factory=utc_now)
    local_features: bytes | None = None  # compact keypoints+descriptors for geometric re-ranking
    descriptors: bytes | None = None  # DescriptorSet: the raw vector and regions, to re-whiten without the network
    whitening: str | None = None  # id of the whitening `vector` was made with

    @property
    def doc_id(self) -> str:
        return doc_id(self.bucket, self.key)

    def metadata(self) -> dict:
        """Everything but the vector and local features, as JSON-ready values."""
        return {
            "id": self.doc_id, "bucket": self.bucket, "key": self.key, "etag": self.etag, "size": self.size,
            "width": self.width, "height": self.height, "content_type": self.content_type,
            "model_id": self.model_id, "whitening": self.whitening, "indexed_at": self.indexed_at,
        }


@dataclass(frozen=True)
class Hit:
    score: float  # cosine similarity
    document: ImageDocument

    @property
    def key(self) -> str:
        return self.document.key

    @property
    def bucket(self) -> str:
        return self.document.bucket


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    total: int  # hits at or above min_score over all pages (for kNN: among the k nearest)
    page: int
    page_size: int


@dataclass(frozen=True)
class SearchRequest:
    """What to search for. page is 1-based: from = (page - 1) * page_size (the demo used from = page).

    vector is one query vector (512,) or several (R, 512): then a document's score is its best cosine over them.
    """

    vector: np.ndarray  # (512,) or (R, 512) float32
    min_score: float | None = None
    page: int = 1
    page_size: int = 10
    mode: str = "exact"  # "exact" | "knn"
    key_prefix: str | None = None
    exclude_ids: tuple[str, ...] = ()
    with_local_features: bool = False

    def __post_init__(self):
        if self.page < 1:
            raise InvalidRequestError(f"page must be 1 or more, got {self.page}")
        if self.page_size < 1:
            raise InvalidRequestError(f"page_size must be 1 or more, got {self.page_size}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidRequestError(f"min_score is a cosine similarity between -1 and 1, got {self.min_score}")
        if self.mode not in ("exact", "knn"):
            raise InvalidRequestError(f"mode must be exact or knn, got {self.mode!r}")

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def queries(self, dim: int) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32).reshape(-1, dim)  # (R, 512)


@dataclass(frozen=True)
class IndexEntry:
    """What sync needs to know to skip unchanged objects: no vectors."""

    doc_id: str
    bucket: str
    key: str
    etag: str | None
    model_id: str


class IndexBackend(ABC):
    """A vector index of ImageDocuments keyed by doc_id(bucket, key)."""

    name: str
    dim: int
    model_id: str

    def checked_vector(self, doc: ImageDocument) -> np.ndarray:
        """The document's vector as float32 (512,), or IncompatibleIndexError if it does not belong here."""
        vector = np.asarray(doc.vector, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise IncompatibleIndexError(f"vector of shape {vector.shape}; this index holds ({self.dim},)")
        if doc.model_id != self.model_id:
            raise IncompatibleIndexError(f"document of model {doc.model_id!r}; this index holds {self.model_id!r}")
        return vector

    @abstractmethod
    def ensure_index(self) -> None:
        """Create the index if it is missing; refuse one whose vectors or model differ (IncompatibleIndexError)."""

    @abstractmethod
    def upsert(self, documents: Sequence[ImageDocument]) -> None:
        """Insert or replace documents by id; all or nothing is not promised, but a failure raises."""

    @abstractmethod
    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents; returns how many existed. Deleting a missing id is not an error."""

    @abstractmethod
    def get(self, doc_id: str, *, with_vector: bool = True) -> ImageDocument | None: ...

    @abstractmethod
    def count(self, *, stale_for: str | None = None) -> int:
        """How many documents; with stale_for, only those whose vector was made with another whitening (a
        document without a whitening id is never stale)."""

    @abstractmethod
    def search(self, request: SearchRequest) -> SearchPage: ...

    @abstractmethod
    def entries(self, bucket: str | None = None) -> Iterator[IndexEntry]:
        """Every document's id, key and etag (for sync)."""

    # -- the index's whitening (whitening.py): stored beside the documents, refitted as the index grows --------
    @abstractmethod
    def whitening_info(self) -> tuple[str, int] | None:
        """(id, images fitted on) of the stored whitening, or None; cheap enough to ask on every request."""

    @abstractmethod
    def load_whitening(self) -> Whitening | None: ...

    @abstractmethod
    def save_whitening(self, whitening: Whitening) -> None:
        """Store it as the index's whitening, replacing any other (last writer wins)."""

    @abstractmethod
    def descriptor_sets(self, *, stale_for: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(doc_id, DescriptorSet bytes) of every document that has them; with stale_for, only of the stale ones
        (see count)."""

    @abstractmethod
    def set_vectors(self, updates: Sequence[tuple[str, np.ndarray, str]]) -> None:
        """Replace the vectors of existing documents: (doc_id, vector (512,), whitening id) each."""

    def refresh(self) -> None:
        """Make recent writes visible to search (a no-op where they always are)."""

    def health(self) -> dict:
        """{"ok": bool, "backend": name, ...details}; never raises."""
        return {"ok": True, "backend": self.name}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
