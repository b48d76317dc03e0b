"""Health probes: is the index answering, and can the configured bucket (or folder) be reached?"""

from __future__ import annotations

from imgsearch.errors import ImgSearchError


def index_health(service) -> dict:
    try:
        return service.index.health()
    except ImgSearchError as exc:  # e.g. the embedded index cannot even open its file
        return {"ok": False, "backend": getattr(service.index, "name", "?"), "error": str(exc)}


def storage_health(service, bucket: str) -> dict:
    """One cheap request: the folder must exist, or the S3 bucket must answer HEAD."""
    report = {"bucket": bucket}
    try:
        service.storage(bucket).check()
    except Exception as exc:  # for a probe, any failure (no bucket, access refused, no connection) means "down"
        return {**report, "ok": False, "error": str(exc) or type(exc).__name__}
    return {**report, "ok": True}
