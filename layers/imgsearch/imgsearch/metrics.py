"""CloudWatch metrics from the functions, with powertools Metrics: each invocation's figures are written as one
line of CloudWatch embedded metric format (EMF) on stdout, which Lambda's log stream turns into metrics (no API
call, no permission). The names are the dashboard's and the alarms' contract (README, "Seeing it run").

Outside Lambda the same lines go to stdout; `imgsearch serve`, `worker` and `webhook` turn them off
(POWERTOOLS_METRICS_DISABLED) unless asked for.
"""

from __future__ import annotations

import os

NAMESPACE = "ImgSearch"  # POWERTOOLS_METRICS_NAMESPACE overrides it
DISABLED_ENV = "POWERTOOLS_METRICS_DISABLED"

# extract
INDEXED, UNCHANGED, DELETED = "ImagesIndexed", "ImagesUnchanged", "ImagesDeleted"
FAILED = "ImagesFailed"  # dead-lettered: the data's fault
RETRIED = "ImagesRetried"  # a transient or operator failure, put back on the queue
INDEX_MS = "IndexMs"  # one object: read, decode, embed, local features, write
INGEST_LAG_MS = "IngestLagMs"  # from the event's arrival in the queue to its document written
DRIFT_FIXED = "DriftFixed"  # reconcile: documents added, dropped or failed because no event had kept them in step
# search
QUERIES, QUERY_MS, HITS_VERIFIED = "Queries", "QueryMs", "HitsVerified"


def make_metrics(service: str):
    from aws_lambda_powertools import Metrics

    return Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE, service=service)


def publish(metrics) -> None:
    """Write what was added since the last call as one EMF line (nothing when nothing was added, or when
    metrics are disabled), and start afresh: a warm function must not carry figures into the next call."""
    if metrics.metric_set:
        metrics.flush_metrics()
    metrics.clear_metrics()
