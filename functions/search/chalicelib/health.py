"""Health probes for the public /health route: the configured bucket (or folder) here, the index's own probe is
ImageSearch.health(). The route is unauthenticated, so its answer says which part is down and nothing else:
reasons (exception text, file paths, host names) go to the log."""

from __future__ import annotations

import logging

log = logging.getLogger("imgsearch.api")
PUBLIC_FIELDS = ("ok", "backend")


def storage_health(storages, bucket: str) -> dict:
    """One cheap request: the folder must exist, or the S3 bucket must answer HEAD."""
    try:
        storages.get(bucket).check()
    except Exception as exc:  # for a probe, any failure (no bucket, access refused, no connection) means "down"
        return {"ok": False, "bucket": bucket, "error": str(exc) or type(exc).__name__}
    return {"ok": True}


def public_report(report: dict[str, dict]) -> dict:
    """{part: full report} -> {"ok", "down": [parts], part: {"ok", "backend"}}; a down part's details are logged."""
    down = [part for part, state in report.items() if not state.get("ok")]
    for part in down:
        log.warning("health: %s is down: %s", part, report[part])
    return {"ok": not down, "down": down,
            **{part: {k: state[k] for k in PUBLIC_FIELDS if k in state} for part, state in report.items()}}
