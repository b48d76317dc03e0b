"""Health probe of the configured bucket (or folder); the index's own probe is ImageSearch.health()."""

from __future__ import annotations


def storage_health(storages, bucket: str) -> dict:
    """One cheap request: the folder must exist, or the S3 bucket must answer HEAD."""
    report = {"bucket": bucket}
    try:
        storages.get(bucket).check()
    except Exception as exc:  # for a probe, any failure (no bucket, access refused, no connection) means "down"
        return {**report, "ok": False, "error": str(exc) or type(exc).__name__}
    return {**report, "ok": True}
