"""Ingest: bring the index in line with the bucket, one object (an event) or a whole prefix (index, sync).

"The bucket is the truth": whatever an event said, we look at the object now (present -> embed and upsert,
absent -> delete), so duplicate, late and out-of-order events converge. An object whose bytes are unchanged but
whose labels (folder, tags, user metadata: labels.py) are not, e.g. after an ObjectTagging event, has its labels
replaced without embedding it again. A new image that copies an indexed one records its original (duplicates.py).
The whitening's upkeep is not done here: callers run upkeep.WhiteningUpkeep.after_ingest() afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import duplicates, local_features
from .config import Settings
from .errors import NotFoundError, PermanentError
from .events import ObjectChange
from .images import DecodedImage, decode_image
from .index import ImageDocument, IndexBackend, doc_id
from .labels import Labels
from .storage import Storage, StoredObject
from .storages import Storages
from .upkeep import CurrentWhitening

if TYPE_CHECKING:
    from .embedder import Embedder


@dataclass(frozen=True)
class ChangeOutcome:
    action: str  # "indexed" | "relabelled" | "unchanged" | "deleted" | "absent" | "not_indexed" (a tag change)
    bucket: str
    key: str
    doc_id: str


@dataclass
class IndexReport:
    indexed: int = 0
    relabelled: int = 0  # unchanged bytes, new labels (or labels added to a document indexed without them)
    unchanged: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)

    def to_dict(self) -> dict:
        return {"indexed": self.indexed, "relabelled": self.relabelled, "unchanged": self.unchanged,
                "deleted": self.deleted, "failed": [{"key": k, "reason": r} for k, r in self.failed]}


class Ingester:
    """Object -> document: read, decode, embed with the current whitening, upsert; or delete what is gone."""

    def __init__(self, settings: Settings, embedder: Embedder, index: IndexBackend, storages: Storages,
                 whitening: CurrentWhitening):
        self.settings, self.embedder, self.index = settings, embedder, index
        self.storages, self.whitening = storages, whitening

    def apply_change(self, change: ObjectChange) -> ChangeOutcome:
        """Bring the index in line with the object an event names. Raises PermanentError for a bad image. A tag
        change only concerns an indexed image: of any other object (a bad file, one whose creation is still on
        its way) it is "not_indexed", neither indexed nor rejected a second time."""
        return self.sync_object(self.storages.get(change.bucket), change.key, indexed_only=change.is_tag_change)

    def sync_object(self, storage: Storage, key: str, *, indexed_only: bool = False) -> ChangeOutcome:
        """indexed_only: leave an object that is not indexed alone ("not_indexed")."""
        did = doc_id(storage.bucket, key)
        current = storage.head(key)
        if current is None:
            removed = self.index.delete([did])
            return ChangeOutcome("deleted" if removed else "absent", storage.bucket, key, did)
        existing = self.index.get(did, with_vector=False)
        if existing is None and indexed_only:
            return ChangeOutcome("not_indexed", storage.bucket, key, did)
        labels = read_labels(storage, current)
        if existing is not None and _unchanged(existing, current, self.embedder.model_id):
            if existing.has_labels(labels):
                return ChangeOutcome("unchanged", storage.bucket, key, did)
            self.index.set_labels([(did, labels)])
            return ChangeOutcome("relabelled", storage.bucket, key, did)
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
        self.index.upsert(self._documents([current], [decoded], [labels]))
        return ChangeOutcome("indexed", storage.bucket, key, did)

    def index_source(self, storage: Storage, prefix: str = "", *, prune: bool = False, force: bool = False,
                     progress: Callable[[int], None] | None = None) -> IndexReport:
        """Index every object under prefix in batches, skipping unchanged ones (unless force: e.g. to add local
        features to documents indexed without them); prune drops vanished ones. Labels are read for the objects
        indexed and for documents indexed before labels were kept; later label changes arrive as events."""
        self.storages.add(storage)
        known = {e.key: e for e in self.index.entries(bucket=storage.bucket) if e.key.startswith(prefix)}
        objects = list(storage.list(prefix))
        report = IndexReport()
        todo, unlabelled = [], []
        for obj in objects:
            entry = known.get(obj.key)
            if not force and entry is not None and _unchanged(entry, obj, self.embedder.model_id):
                if entry.labelled:
                    report.unchanged += 1
                else:
                    unlabelled.append((entry.doc_id, obj))
                if progress:
                    progress(1)
            else:
                todo.append(obj)
        self._add_labels(storage, unlabelled, report)
        for start in range(0, len(todo), self.settings.batch_size):
            batch = todo[start:start + self.settings.batch_size]
            good, decoded, labels = [], [], []
            for obj in batch:
                try:
                    one, label = self._read_and_decode(storage, obj), read_labels(storage, obj)
                except (PermanentError, NotFoundError) as exc:
                    report.failed.append((obj.key, str(exc)))
                    continue
                good.append(obj)
                decoded.append(one)
                labels.append(label)
            documents = self._documents_or_failures(good, decoded, labels, report)
            self.index.upsert(documents)
            report.indexed += len(documents)
            if progress:
                progress(len(batch))
        if prune:
            present = {obj.key for obj in objects}
            stale = [e.doc_id for key, e in known.items() if key not in present]
            report.deleted = self.index.delete(stale) if stale else 0
        self.index.refresh()
        return report

    def _add_labels(self, storage: Storage, unlabelled: list[tuple[str, StoredObject]], report: IndexReport) -> None:
        """Labels for documents indexed before labels were kept, without embedding them again."""
        updates = []
        for did, obj in unlabelled:
            try:
                updates.append((did, read_labels(storage, obj)))
            except (PermanentError, NotFoundError) as exc:
                report.failed.append((obj.key, str(exc)))
        if updates:
            self.index.set_labels(updates)  # the backends write in chunks themselves
        report.relabelled += len(updates)

    def _read_and_decode(self, storage: Storage, obj: StoredObject) -> DecodedImage:
        data = storage.read(obj.key, max_bytes=self.settings.max_image_bytes)
        # keep_long_side: the local features' frame is then the file's own, scaled, so match outlines map onto
        # the width and height the document records (the file's, not the decoder's shortcut)
        return decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_pixels,
                            draft_size=224, keep_long_side=local_features.MAX_SIDE)

    def _documents(self, objects: list[StoredObject], decoded: list[DecodedImage],
                   labels: list[Labels]) -> list[ImageDocument]:
        extracted = local_features.BESIDE_THE_NETWORK.submit(lambda: [self._local_features(d) for d in decoded])
        described = self.embedder.describe([d.image for d in decoded])
        whitening = self.whitening.current_whitening()
        vectors = whitening.apply(np.stack([d.raw for d in described]))  # (n, 512)
        features = extracted.result()
        documents = [ImageDocument(bucket=obj.bucket, key=obj.key, vector=vector, model_id=self.embedder.model_id,
                                   etag=obj.etag, size=obj.size, width=d.width, height=d.height,
                                   content_type=d.content_type,
                                   local_features=None if local is None else local_features.encode(local),
                                   descriptors=descriptors.to_bytes(), whitening=whitening.id, folder=label.folder,
                                   tags=label.tags, user_metadata=label.user_metadata)
                     for obj, d, descriptors, vector, local, label
                     in zip(objects, decoded, described, vectors, features, labels)]
        return self._with_originals(documents, features) if self.settings.flag_duplicates else documents

    def _with_originals(self, documents: list[ImageDocument],
                        features: list[local_features.LocalFeatures | None]) -> list[ImageDocument]:
        """The documents, each copy with the original it copies recorded (duplicates.py): among the indexed ones
        and the batch's earlier ones."""
        done: list[ImageDocument] = []
        for document, own in zip(documents, features):
            original = duplicates.find_original(self.index, document, own, min_inliers=self.settings.rerank_min_inliers,
                                                beside=list(zip(done, features)))
            done.append(dataclasses.replace(document, duplicate_of=original.to_dict()) if original else document)
        return done

    def _documents_or_failures(self, objects: list[StoredObject], decoded: list[DecodedImage], labels: list[Labels],
                               report: IndexReport) -> list[ImageDocument]:
        """Documents for a batch; if one image spoils it (e.g. no features at all), the rest still get theirs."""
        try:
            return self._documents(objects, decoded, labels) if objects else []
        except PermanentError:
            pass  # one at a time below, to name the culprit
        documents = []
        for obj, one, label in zip(objects, decoded, labels):
            try:
                documents += self._documents([obj], [one], [label])
            except PermanentError as exc:
                report.failed.append((obj.key, str(exc)))
        return documents

    def _local_features(self, decoded: DecodedImage) -> local_features.LocalFeatures | None:
        return local_features.extract(decoded.image) if self.settings.rerank else None


def read_labels(storage: Storage, obj: StoredObject) -> Labels:
    """The object's folder, tags and user metadata as the store says them now (a listing has no metadata: HEAD)."""
    metadata = obj.user_metadata
    if metadata is None:
        current = storage.head(obj.key)
        if current is None:
            raise NotFoundError(f"{obj.key!r} is gone")
        metadata = current.user_metadata
    return Labels.of(obj.key, storage.tags(obj.key), metadata)


def _unchanged(entry, obj: StoredObject, model_id: str) -> bool:
    return bool(obj.etag) and entry.etag == obj.etag and entry.model_id == model_id
