"""Health probes: is the index answering, and can the configured bucket (or folder) be reached?"""

from __future__ import annotations

from imgsearch.errors import ImgSearchError
from imgsearch.storage import FolderStorage


def index_health(service) -> dict:
    try:
        return service.index.health()
    except ImgSearchError as exc:  # e.g. the embedded index cannot even open its file
        return {"ok": False, "backend": getattr(service.index, "name", "?"), "error": str(exc)}


def storage_health(service, bucket: str) -> dict:
    """One cheap request: a folder must exist; an S3 bucket must answer one page of a listing."""
    report = {"bucket": bucket}
    try:
        storage = service.storage(bucket)
        if isinstance(storage, FolderStorage):
            # FolderStorage.list walks the whole tree before yielding; a folder only has to exist.
            if not storage.root.is_dir():
                return {**report, "ok": False, "error": f"folder {storage.root} does not exist"}
        else:
            next(iter(storage.list("")), None)
    except Exception as exc:  # NotFoundError (no bucket), access refused, and botocore's own connection errors,
        # which S3Storage.list does not translate: for a probe, any failure means "down"
        return {**report, "ok": False, "error": str(exc) or type(exc).__name__}
    return {**report, "ok": True}
