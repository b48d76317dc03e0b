"""The index contract every backend implements (embedded, Elasticsearch).

tests/contract/ holds the suite any backend must pass. Scores are always cosine similarity in [-1, 1],
whatever the backend computes internally. The whitening a backend stores beside its documents is reached
through its `whitenings`, a WhiteningStore: a small interface of its own, apart from this contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from ..errors import IncompatibleIndexError
from ..labels import Filter, Labels
from ..options import check_search
from ..whitening import Whitening
from .document import ImageDocument


@dataclass(frozen=True)
class ScoredDocument:
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
    hits: list[ScoredDocument]
    total: int  # hits at or above min_score over all pages (for kNN: among the k nearest)
    page: int
    page_size: int


@dataclass(frozen=True)
class SearchRequest:
    """What to search for. page is 1-based: from = (page - 1) * page_size (the demo used from = page).

    vector is one query vector (512,) or several (R, 512): then a document's score is its best cosine over them.
    filters (labels.Filter): only documents that pass all of them are ranked, paged and counted.
    The limits (options.check_search) hold here too, whoever builds the request: at most MAX_QUERY_VECTORS rows.
    """

    vector: np.ndarray  # (512,) or (R, 512) float32
    min_score: float | None = None
    page: int = 1
    page_size: int = 10
    mode: str = "exact"  # "exact" | "knn"
    key_prefix: str | None = None
    exclude_ids: tuple[str, ...] = ()
    with_local_features: bool = False
    filters: tuple[Filter, ...] = ()

    def __post_init__(self):
        shape = np.shape(self.vector)
        rows = 1 if len(shape) == 1 else (shape[0] if len(shape) == 2 else 0)  # 0: not a vector nor a matrix
        check_search(min_score=self.min_score, page=self.page, page_size=self.page_size, mode=self.mode,
                     key_prefix=self.key_prefix, query_vectors=rows, filters=self.filters)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def queries(self, dim: int) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32).reshape(-1, dim)  # (R, 512)


class WhiteningStore(Protocol):
    """Where an index keeps its one whitening (whitening.py): beside its documents, replaced by each refit."""

    def info(self) -> tuple[str, int] | None:
        """(id, images fitted on) of the stored whitening, or None; cheap enough to ask on every request."""

    def load(self) -> Whitening | None: ...

    def save(self, whitening: Whitening) -> None:
        """Store it as the index's whitening, replacing any other (last writer wins)."""


@dataclass(frozen=True)
class IndexEntry:
    """What sync needs to know to skip unchanged objects: no vectors."""

    doc_id: str
    bucket: str
    key: str
    etag: str | None
    model_id: str
    labelled: bool = True  # False: indexed before labels were kept (sync adds them)


class IndexBackend(ABC):
    """A vector index of ImageDocuments keyed by doc_id(bucket, key)."""

    name: str
    dim: int
    model_id: str
    whitenings: WhiteningStore  # the index's whitening, stored beside the documents

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
    def delete_index(self) -> None:
        """Drop the index, its documents and its whitening (evaluations use throw-away indexes)."""

    @abstractmethod
    def upsert(self, documents: Sequence[ImageDocument]) -> None:
        """Insert or replace documents by id; all or nothing is not promised, but a failure raises."""

    @abstractmethod
    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents; returns how many existed. Deleting a missing id is not an error."""

    @abstractmethod
    def get(self, doc_id: str, *, with_vector: bool = True) -> ImageDocument | None:
        """The document; without with_vector, its metadata only (an empty vector, no blobs)."""

    @abstractmethod
    def count(self, *, stale_for: str | None = None) -> int:
        """How many documents; with stale_for, only those whose vector was made with another whitening (a
        document without a whitening id is never stale)."""

    @abstractmethod
    def search(self, request: SearchRequest) -> SearchPage: ...

    @abstractmethod
    def entries(self, bucket: str | None = None) -> Iterator[IndexEntry]:
        """Every document's id, key and etag (for sync)."""

    @abstractmethod
    def copies(self) -> Iterator[ImageDocument]:
        """Every document that has a duplicate_of, metadata only (duplicates.groups makes the groups)."""

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
