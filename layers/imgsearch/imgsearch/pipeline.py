"""The pipeline: ingest objects into the index and search it by image. Every adapter calls this.

Ingest follows "the bucket is the truth": whatever an event said, we look at the object now
(present -> embed and upsert, absent -> delete), so duplicate, late and out-of-order events converge.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable

import numpy as np

from . import local_features
from .config import Settings
from .embedder import Embedder
from .errors import NotFoundError, PermanentError
from .events import ObjectChange
from .images import DecodedImage, decode_image
from .index import IndexBackend, SearchPage, SearchRequest, doc_id, open_index
from .index.base import Hit, ImageDocument
from .storage import FolderStorage, S3Storage, Storage, StoredObject, s3_client
from .whitening import GROWTH, IDENTITY_ID, MIN_IMAGES, REFIT_UNTIL, DescriptorSet, Whitening, WhiteningStats


@dataclass(frozen=True)
class ChangeOutcome:
    action: str  # "indexed" | "unchanged" | "deleted" | "absent"
    bucket: str
    key: str
    doc_id: str


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)

    def to_dict(self) -> dict:
        return {"indexed": self.indexed, "unchanged": self.unchanged, "deleted": self.deleted,
                "failed": [{"key": k, "reason": r} for k, r in self.failed]}


@dataclass(frozen=True)
class SearchResults:
    page: SearchPage
    hits: list[dict]
    took_ms: float

    def to_dict(self) -> dict:
        return {"hits": self.hits, "total": self.page.total, "page": self.page.page,
                "page_size": self.page.page_size, "took_ms": round(self.took_ms, 1)}


class ImageSearch:
    """Ingest and search, over one index, one embedder and any number of buckets or folders."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, index: IndexBackend | None = None,
                 storage_for: Callable[[str], Storage] | None = None):
        self.settings = settings
        self.embedder = embedder or Embedder(settings.weights, batch_size=settings.batch_size)
        self.index = index or open_index(settings, model_id=self.embedder.model_id, dim=self.embedder.dim)
        self._storage_for = storage_for or self._default_storage
        self._storages: dict[str, Storage] = {}
        self._s3 = None
        self._whitening = Whitening.identity(self.embedder.dim)

    # -- storage ------------------------------------------------------------------------------------------
    def storage(self, bucket: str) -> Storage:
        if bucket not in self._storages:
            self._storages[bucket] = self._storage_for(bucket)
        return self._storages[bucket]

    def _default_storage(self, bucket: str) -> Storage:
        if bucket.startswith("/"):  # folder "buckets" are absolute paths; S3 bucket names never start with "/"
            return FolderStorage(bucket)
        if self._s3 is None:
            self._s3 = s3_client()
        return S3Storage(bucket, client=self._s3, url_expires=self.settings.url_expires)

    def use_storage(self, storage: Storage) -> Storage:
        """Register a storage object (e.g. one built from a CLI argument) for its bucket."""
        self._storages[storage.bucket] = storage
        return storage

    # -- ingest -------------------------------------------------------------------------------------------
    def apply_change(self, change: ObjectChange) -> ChangeOutcome:
        """Bring the index in line with the object an event names. Raises PermanentError for a bad image."""
        return self.sync_object(self.storage(change.bucket), change.key)

    def sync_object(self, storage: Storage, key: str) -> ChangeOutcome:
        did = doc_id(storage.bucket, key)
        current = storage.head(key)
        if current is None:
            removed = self.index.delete([did])
            return ChangeOutcome("deleted" if removed else "absent", storage.bucket, key, did)
        existing = self.index.get(did, with_vector=False)
        if existing is not None and _unchanged(existing, current, self.embedder.model_id):
            self.maybe_refit()  # a retried event may find its image indexed but the refit after it not done
            return ChangeOutcome("unchanged", storage.bucket, key, did)
        try:
            decoded = self._read_and_decode(storage, current)
        except PermanentError:
            # The object under this key is no longer a usable image: its old vector would point at it wrongly.
            if existing is not None:
                self.index.delete([did])
            raise
        except NotFoundError:  # deleted between HEAD and GET: a later event (or this state) says "absent"
            self.index.delete([did])
            return ChangeOutcome("deleted", storage.bucket, key, did)
        self.index.upsert(self._documents([current], [decoded]))
        self.maybe_refit()
        return ChangeOutcome("indexed", storage.bucket, key, did)

    def index_source(self, storage: Storage, prefix: str = "", *, prune: bool = False, force: bool = False,
                     progress: Callable[[int], None] | None = None) -> IndexReport:
        """Index every object under prefix in batches, skipping unchanged ones (unless force: e.g. to add local
        features to documents indexed without them); prune drops vanished ones."""
        self.use_storage(storage)
        known = {e.key: e for e in self.index.entries(bucket=storage.bucket) if e.key.startswith(prefix)}
        objects = list(storage.list(prefix))
        report = IndexReport()
        todo = []
        for obj in objects:
            entry = known.get(obj.key)
            if not force and entry is not None and _unchanged(entry, obj, self.embedder.model_id):
                report.unchanged += 1
                if progress:
                    progress(1)
            else:
                todo.append(obj)
        for start in range(0, len(todo), self.settings.batch_size):
            batch = todo[start:start + self.settings.batch_size]
            good, decoded = [], []
            for obj in batch:
                try:
                    decoded.append(self._read_and_decode(storage, obj))
                    good.append(obj)
                except (PermanentError, NotFoundError) as exc:
                    report.failed.append((obj.key, str(exc)))
            documents = self._documents_or_failures(good, decoded, report)
            self.index.upsert(documents)
            report.indexed += len(documents)
            if progress:
                progress(len(batch))
        if prune:
            present = {obj.key for obj in objects}
            stale = [e.doc_id for key, e in known.items() if key not in present]
            report.deleted = self.index.delete(stale) if stale else 0
        self.index.refresh()
        self.maybe_refit()
        return report

    def _read_and_decode(self, storage: Storage, obj: StoredObject) -> DecodedImage:
        data = storage.read(obj.key, max_bytes=self.settings.max_image_bytes)
        return self.decode(data)

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_pixels,
                            draft_size=224)

    def _documents(self, objects: list[StoredObject], decoded: list[DecodedImage]) -> list[ImageDocument]:
        described = self.embedder.describe([d.image for d in decoded])
        whitening = self.whitening()
        vectors = whitening.apply(np.stack([d.raw for d in described]))  # (n, 512)
        return [ImageDocument(bucket=obj.bucket, key=obj.key, vector=vector, model_id=self.embedder.model_id,
                              etag=obj.etag, size=obj.size, width=d.width, height=d.height,
                              content_type=d.content_type, local_features=self._local_features(d),
                              descriptors=descriptors.to_bytes(), whitening=whitening.id)
                for obj, d, descriptors, vector in zip(objects, decoded, described, vectors)]

    def _documents_or_failures(self, objects: list[StoredObject], decoded: list[DecodedImage],
                               report: IndexReport) -> list[ImageDocument]:
        """Documents for a batch; if one image spoils it (e.g. no features at all), the rest still get theirs."""
        try:
            return self._documents(objects, decoded) if objects else []
        except PermanentError:
            pass  # one at a time below, to name the culprit
        documents = []
        for obj, one in zip(objects, decoded):
            try:
                documents += self._documents([obj], [one])
            except PermanentError as exc:
                report.failed.append((obj.key, str(exc)))
        return documents

    def _local_features(self, decoded: DecodedImage) -> bytes | None:
        return local_features.encode(local_features.extract(decoded.image)) if self.settings.rerank else None

    # -- whitening ----------------------------------------------------------------------------------------
    def whitening(self) -> Whitening:
        """The index's whitening (the identity until it has one), reloaded only when another process changed it."""
        info = self.index.whitening_info() if self.embedder.whitened else None
        if (info[0] if info else IDENTITY_ID) != self._whitening.id:
            self._whitening = self.index.load_whitening() or Whitening.identity(self.embedder.dim)
        return self._whitening

    def maybe_refit(self) -> None:
        """After a write: refit the whitening if the index has grown enough since the last fit (whitening.py's
        policy), else re-derive vectors left behind by another whitening (a refit elsewhere that raced with
        this write, or one cut short by a timeout)."""
        if not self.embedder.whitened:
            return
        current = self.whitening()
        self.index.refresh()  # counts must include this write, or a burst of events could end without a refit
        count = self.index.count()
        if count >= MIN_IMAGES and current.images < REFIT_UNTIL and count >= GROWTH * current.images:
            self.refit()
        elif self.index.count(stale_for=current.id):
            self.rewhiten()

    def refit(self) -> dict:
        """Fit the whitening on every indexed image's regions, store it, and re-derive every stored vector."""
        self.index.refresh()  # every document written before this point takes part, and is re-derived below
        stats = WhiteningStats(self.embedder.dim)
        for _, blob in self.index.descriptor_sets():
            stats.add(DescriptorSet.from_bytes(blob).regions)
        if not stats.images:
            return {"whitening": self.whitening().id, "images": 0, "rewhitened": 0}
        self._whitening = stats.fit()
        self.index.save_whitening(self._whitening)
        return {"whitening": self._whitening.id, "images": stats.images, "rewhitened": self.rewhiten()}

    def rewhiten(self, batch_size: int = 200) -> int:
        """Re-derive the vectors made with another whitening than the current one; returns how many. Stops if
        a newer refit (another process) takes over: that one re-derives everything."""
        whitening = self.whitening()
        stale = self.index.descriptor_sets(stale_for=whitening.id)
        done = 0
        while batch := list(islice(stale, batch_size)):
            if self.whitening().id != whitening.id:
                break
            vectors = whitening.apply(np.stack([DescriptorSet.from_bytes(blob).raw for _, blob in batch]))
            self.index.set_vectors([(did, vector, whitening.id) for (did, _), vector in zip(batch, vectors)])
            done += len(batch)
        self.index.refresh()
        return done

    # -- search -------------------------------------------------------------------------------------------
    def search_image(self, data: bytes, **options) -> SearchResults:
        """Search with an uploaded image. Options: min_score, page, page_size, mode, key_prefix, rerank."""
        started = time.perf_counter()
        image = self.decode(data).image
        vectors = self.whitening().apply(self.embedder.embed_query(image))  # (1 + R, 512): itself, its regions
        return self._search(vectors, started, query_features=lambda: local_features.extract(image), **options)

    def similar_to(self, bucket: str, key: str, **options) -> SearchResults:
        """More like an already indexed image, without uploading it again; the image itself is left out."""
        started = time.perf_counter()
        document = self.document(bucket, key)
        return self._search(document.vector, started, exclude_ids=(document.doc_id,),
                            query_features=lambda: local_features.decode(document.local_features), **options)

    def document(self, bucket: str, key: str) -> ImageDocument:
        document = self.index.get(doc_id(bucket, key))
        if document is None:
            raise NotFoundError(f"{key!r} is not indexed in bucket {bucket!r}")
        return document

    def describe(self, bucket: str, key: str) -> dict:
        return {**self.document(bucket, key).metadata(), "url": self.url(bucket, key)}

    def _search(self, vector, started: float, *, query_features, min_score=None, page=1, page_size=10, mode=None,
                key_prefix=None, exclude_ids: Iterable[str] = (), rerank: bool | None = None) -> SearchResults:
        request = SearchRequest(vector=vector, min_score=min_score, page=page, page_size=page_size,
                                mode=mode or self.settings.search_mode, key_prefix=key_prefix,
                                exclude_ids=tuple(exclude_ids))
        depth = self.settings.rerank_depth
        if not (self.settings.rerank if rerank is None else rerank) or request.offset >= depth:
            page_ = self.index.search(request)
            hits = [self.hit_dict(hit) for hit in page_.hits]
        else:
            page_, hits = self._reranked(request, query_features())
        return SearchResults(page=page_, hits=hits, took_ms=(time.perf_counter() - started) * 1000)

    def _reranked(self, request: SearchRequest, query) -> tuple[SearchPage, list[dict]]:
        """Verify the best `rerank_depth` candidates geometrically and put the convincing ones first; the page
        is then cut from that order (pages past the depth keep the global order)."""
        head = dataclasses.replace(request, page=1, page_size=max(self.settings.rerank_depth,
                                                                  request.offset + request.page_size),
                                   with_local_features=True)
        found = self.index.search(head)
        checked = found.hits[:self.settings.rerank_depth]
        counts = (local_features.inliers(query, [local_features.decode(h.document.local_features) for h in checked],
                                         min_matches=self.settings.rerank_min_inliers)
                  if query is not None else [0] * len(checked))
        order = local_features.rerank_order(counts, self.settings.rerank_min_inliers)
        ranked = [(checked[i], counts[i]) for i in order] + [(hit, None) for hit in found.hits[len(checked):]]
        window = ranked[request.offset:request.offset + request.page_size]
        hits = [{**self.hit_dict(hit), "inliers": count,
                 "verified": None if count is None else count >= self.settings.rerank_min_inliers}
                for hit, count in window]
        page_ = SearchPage(hits=[hit for hit, _ in window], total=found.total, page=request.page,
                           page_size=request.page_size)
        return page_, hits

    def hit_dict(self, hit: Hit) -> dict:
        doc = hit.document
        return {"score": round(hit.score, 6), "key": doc.key, "bucket": doc.bucket, "url": self.url(doc.bucket, doc.key),
                "size": doc.size, "width": doc.width, "height": doc.height, "content_type": doc.content_type,
                "id": doc.doc_id, "inliers": None, "verified": None}  # the last two: set for re-ranked hits

    def url(self, bucket: str, key: str) -> str:
        return self.storage(bucket).url(key)

    def stats(self) -> dict:
        return {"documents": self.index.count(), "model_id": self.embedder.model_id, "backend": self.index.name,
                "whitening": self.whitening().id}

    def close(self) -> None:
        self.index.close()


def _unchanged(entry, obj: StoredObject, model_id: str) -> bool:
    return bool(obj.etag) and entry.etag == obj.etag and entry.model_id == model_id
