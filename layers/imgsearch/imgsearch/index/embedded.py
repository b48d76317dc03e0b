"""The embedded index: one SQLite file on disk plus an in-memory matrix for exact cosine search.

No server: the default for one machine. SQLite gives atomic upserts and lets the CLI, the worker and the
API server share one data directory; search keeps a (n, 512) float32 copy of the vectors and reloads it
only when some connection has committed a change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import BackendUnavailableError, IncompatibleIndexError
from ..labels import Filter, Labels
from ..whitening import Whitening
from .base import IndexBackend, IndexEntry, ScoredDocument, SearchPage, SearchRequest
from .document import FIELDS, JSON_FIELDS, LABEL_FIELDS, META_FIELDS, ImageDocument, sql_columns

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    {sql_columns()}
);
CREATE TABLE IF NOT EXISTS whitening (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id TEXT NOT NULL,
    images INTEGER NOT NULL,
    matrix BLOB NOT NULL
);
"""
_COLUMNS = ("doc_id", *(f.name for f in FIELDS))  # what upsert writes, in this order
_META = ", ".join(("doc_id", *META_FIELDS))


class EmbeddedIndex(IndexBackend):
    name = "embedded"

    def __init__(self, data_dir: str | Path, *, dim: int = 512, model_id: str):
        self.path = Path(data_dir) / "index.sqlite3"
        self.dim = dim
        self.model_id = model_id
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._writes = 0  # our own commits; PRAGMA data_version only counts other connections'
        self._snapshot_version = None
        self._snapshot = None
        self.whitenings = EmbeddedWhitenings(self)

    # -- connection -------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer (API + worker)
            except (OSError, sqlite3.Error) as exc:
                raise BackendUnavailableError(f"cannot open the embedded index at {self.path}: {exc}") from exc
            self._db = db
        return self._db

    def ensure_index(self) -> None:
        with self._lock:
            db = self._conn()
            db.executescript(_SCHEMA)
            self._add_new_columns(db)
            with db:
                db.execute("BEGIN IMMEDIATE")
                stored = dict(db.execute("SELECT name, value FROM meta").fetchall())
                if not stored:
                    db.executemany("INSERT INTO meta VALUES (?, ?)",
                                   [("dim", str(self.dim)), ("model_id", self.model_id)])
                    return
            if stored.get("dim") != str(self.dim) or stored.get("model_id") != self.model_id:
                raise IncompatibleIndexError(
                    f"the index at {self.path} holds {stored.get('dim')}-d vectors of model "
                    f"{stored.get('model_id')!r}, but this process makes {self.dim}-d vectors of model "
                    f"{self.model_id!r}; use another IMGSEARCH_DATA_DIR or delete the old index")

    @staticmethod
    def _add_new_columns(db: sqlite3.Connection) -> None:
        """A field added to document.py since this file was made: its column, empty in the existing rows."""
        present = {row[1] for row in db.execute("PRAGMA table_info(documents)")}
        for f in FIELDS:
            if f.name not in present:
                db.execute(f"ALTER TABLE documents ADD COLUMN {f.name} {f.metadata['sql']}")

    def delete_index(self) -> None:
        with self._lock:
            self.close()
            self._snapshot_version = self._snapshot = None
            for suffix in ("", "-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    # -- writes -------------------------------------------------------------------------------------------
    def upsert(self, documents: Sequence[ImageDocument]) -> None:
        rows = []
        for doc in documents:
            vector = self.checked_vector(doc)
            rows.append((doc.doc_id, *(vector.tobytes() if f.name == "vector" else _column(f.name, getattr(doc, f.name))
                                       for f in FIELDS)))
        if not rows:
            return
        with self._lock, self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT OR REPLACE INTO documents ({', '.join(_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
            self._writes += 1

    def set_vectors(self, updates: Sequence[tuple[str, np.ndarray, str]]) -> None:
        rows = [(np.asarray(vector, dtype=np.float32).tobytes(), whitening, did) for did, vector, whitening in updates]
        with self._lock, self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("UPDATE documents SET vector = ?, whitening = ? WHERE doc_id = ?", rows)
            self._writes += 1

    def set_labels(self, updates: Sequence[tuple[str, Labels]]) -> None:
        rows = [(*(_column(name, getattr(labels, name)) for name in LABEL_FIELDS), did) for did, labels in updates]
        columns = ", ".join(f"{name} = ?" for name in LABEL_FIELDS)
        with self._lock, self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"UPDATE documents SET {columns} WHERE doc_id = ?", rows)
            self._writes += 1

    def copies(self) -> Iterator[ImageDocument]:
        with self._lock:
            rows = self._conn().execute(f"SELECT {_META}, NULL, NULL FROM documents "
                                        "WHERE duplicate_of IS NOT NULL").fetchall()
        return iter([_document(row) for row in rows])

    def descriptor_sets(self, *, stale_for: str | None = None) -> Iterator[tuple[str, bytes]]:
        query = "SELECT doc_id, descriptors FROM documents WHERE descriptors IS NOT NULL"
        with self._lock:
            rows = (self._conn().execute(query + " AND whitening != ?", (stale_for,)) if stale_for is not None
                    else self._conn().execute(query)).fetchall()
        return iter(rows)

    def delete(self, doc_ids: Iterable[str]) -> int:
        ids = [(i,) for i in doc_ids]
        with self._lock, self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            db.executemany("DELETE FROM documents WHERE doc_id = ?", ids)
            self._writes += 1
            return db.total_changes - before

    # -- reads --------------------------------------------------------------------------------------------
    def get(self, doc_id: str, *, with_vector: bool = True) -> ImageDocument | None:
        extra = "vector, local_features" if with_vector else "NULL, NULL"
        with self._lock:
            row = self._conn().execute(f"SELECT {_META}, {extra} FROM documents WHERE doc_id = ?",
                                       (doc_id,)).fetchone()
        return _document(row) if row else None

    def count(self, *, stale_for: str | None = None) -> int:
        with self._lock:
            if stale_for is None:
                return self._conn().execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            return self._conn().execute("SELECT COUNT(*) FROM documents WHERE whitening != ?",
                                        (stale_for,)).fetchone()[0]  # NULL (no whitening) is never != anything

    def entries(self, bucket: str | None = None) -> Iterator[IndexEntry]:
        query = "SELECT doc_id, bucket, key, etag, model_id, folder IS NOT NULL FROM documents"
        with self._lock:
            rows = (self._conn().execute(query + " WHERE bucket = ?", (bucket,)) if bucket is not None
                    else self._conn().execute(query)).fetchall()
        return iter([IndexEntry(*row[:5], labelled=bool(row[5])) for row in rows])

    def search(self, request: SearchRequest) -> SearchPage:
        # The embedded index is always exact: "knn" is answered exactly too.
        ids, keys, matrix = self._vectors()
        scores = (matrix @ request.queries(self.dim).T).max(axis=1)  # (n,) best cosine: all rows unit length
        allowed = self._passing(request.filters) if request.filters else None
        page, total = _page_of(request, ids, keys, scores, allowed)
        documents = self._documents([str(ids[i]) for i in page], request.with_local_features)
        hits = [ScoredDocument(score=float(scores[i]), document=documents[str(ids[i])]) for i in page]
        return SearchPage(hits=hits, total=total, page=request.page, page_size=request.page_size)

    def _passing(self, filters: tuple[Filter, ...]) -> list[str]:
        """The ids of the documents that pass every filter (one SQL query; ranking is numpy's)."""
        clauses, params = [], []
        for f in filters:
            marks = ",".join("?" * len(f.values))
            if f.name is None:
                clauses.append(f"{f.field} IN ({marks})")
            else:  # json_each: any name works, quotes and dots included (a JSON path would need escaping)
                clauses.append(f"EXISTS (SELECT 1 FROM json_each(documents.{f.field}) AS label "
                               f"WHERE label.key = ? AND label.value IN ({marks}))")
                params.append(f.name)
            params += f.values
        with self._lock:
            rows = self._conn().execute(f"SELECT doc_id FROM documents WHERE {' AND '.join(clauses)}",
                                        params).fetchall()
        return [row[0] for row in rows]

    def _documents(self, doc_ids: list[str], with_local_features: bool) -> dict[str, ImageDocument]:
        if not doc_ids:
            return {}
        marks = ",".join("?" * len(doc_ids))
        extra = "local_features" if with_local_features else "NULL"
        with self._lock:
            rows = self._conn().execute(
                f"SELECT {_META}, vector, {extra} FROM documents WHERE doc_id IN ({marks})",
                doc_ids).fetchall()
        return {row[0]: _document(row) for row in rows}

    def _vectors(self):
        """(ids, keys, matrix) of every document, reloaded only after a commit by anyone."""
        with self._lock:
            db = self._conn()
            version = (db.execute("PRAGMA data_version").fetchone()[0], self._writes)
            if version != self._snapshot_version:
                rows = db.execute("SELECT doc_id, key, vector FROM documents").fetchall()
                ids = np.array([r[0] for r in rows], dtype=str)
                keys = np.array([r[1] for r in rows], dtype=str)
                matrix = (np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
                          if rows else np.zeros((0, self.dim), dtype=np.float32))  # (n, 512)
                self._snapshot, self._snapshot_version = (ids, keys, matrix), version
            return self._snapshot

    def health(self) -> dict:
        try:
            return {"ok": True, "backend": self.name, "path": str(self.path), "documents": self.count()}
        except (sqlite3.Error, BackendUnavailableError) as exc:
            return {"ok": False, "backend": self.name, "path": str(self.path), "error": str(exc)}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _page_of(request: SearchRequest, ids: np.ndarray, keys: np.ndarray, scores: np.ndarray,
             allowed: list[str] | None = None) -> tuple[np.ndarray, int]:
    """(row numbers of the requested page, best first with ties by id; how many rows pass the filters).
    allowed: the ids that pass the request's label filters (None: no such filters)."""
    keep = np.ones(len(ids), dtype=bool)  # (n,)
    if allowed is not None:
        keep &= np.isin(ids, allowed)
    if request.min_score is not None:
        keep &= scores >= np.float32(request.min_score)
    if request.key_prefix:
        keep &= np.char.startswith(keys, request.key_prefix)
    if request.exclude_ids:
        keep &= ~np.isin(ids, list(request.exclude_ids))
    candidates = np.flatnonzero(keep)  # (m,)
    end = request.offset + request.page_size
    if end < len(candidates):  # only the best `end` need sorting: partition first (10x less work at 100k)
        candidates = candidates[np.argpartition(-scores[candidates], end - 1)[:end]]
    order = candidates[np.lexsort((ids[candidates], -scores[candidates]))]  # best first, ties by id
    return order[request.offset:end], int(keep.sum())


def _column(name: str, value):
    """A field's value as its SQLite column holds it (dicts as JSON text)."""
    return json.dumps(value) if name in JSON_FIELDS and value is not None else value


def _document(row) -> ImageDocument:
    """A row of SELECT {_META}, vector, local_features."""
    values = dict(zip(META_FIELDS, row[1:]))
    for name in JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    vector, local = row[-2:]
    return ImageDocument(**values, vector=np.frombuffer(vector, dtype=np.float32).copy() if vector is not None
                         else np.zeros(0, dtype=np.float32), local_features=local)


class EmbeddedWhitenings:
    """The index's whitening: one row of the same SQLite file (a WhiteningStore)."""

    def __init__(self, index: EmbeddedIndex):
        self._index = index

    def info(self) -> tuple[str, int] | None:
        with self._index._lock:
            row = self._index._conn().execute("SELECT id, images FROM whitening").fetchone()
        return (row[0], row[1]) if row else None

    def load(self) -> Whitening | None:
        with self._index._lock:
            row = self._index._conn().execute("SELECT id, images, matrix FROM whitening").fetchone()
        return Whitening.from_bytes(row[2], row[0], row[1], dim=self._index.dim) if row else None

    def save(self, whitening: Whitening) -> None:
        with self._index._lock, self._index._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO whitening VALUES (1, ?, ?, ?)",
                       (whitening.id, whitening.images, whitening.to_bytes()))
