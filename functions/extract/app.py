"""The extract function: object-change events in, index updates out.

Lambda entry point `app.handler`. It accepts an SQS batch (S3 notifications inside, reported with
batchItemFailures), a direct S3 notification, an EventBridge event, or a MinIO webhook payload. The work
itself is the core's: the ingester applies the change, then the whitening's upkeep runs (upkeep.py); this
module only routes events and reports failures, and what it did: powertools Metrics (imgsearch.metrics: images
indexed, failed, retried, the time per object and the ingest lag) and Tracer (X-Ray, where the function has
active tracing; a no-op elsewhere).

`app.reconcile`, run on a schedule (template.yaml's ReconcileFunction, the same image), is `imgsearch sync` of
the configured bucket: it indexes what no event delivered and drops documents whose objects are gone, and logs
what it fixed (nothing, when events kept the index in step).
"""

from __future__ import annotations

import functools
import json
import re
import time

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from imgsearch import metrics as names
from imgsearch import service
from imgsearch.errors import ConfigError, PermanentError
from imgsearch.events import ObjectChange, parse_notification
from imgsearch.ingest import ChangeOutcome

SERVICE = "imgsearch-extract"
logger = Logger(service=SERVICE)
metrics = names.make_metrics(SERVICE)
tracer = Tracer(service=SERVICE)
# Report every failure as batchItemFailures, even a whole failed batch (no exception: one shape to handle).
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handler(event: dict, context=None) -> dict:
    try:
        return _route(event, context)
    finally:
        names.publish(metrics)


def _route(event: dict, context) -> dict:
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list) and records and isinstance(records[0], dict) \
            and records[0].get("eventSource") == "aws:sqs":
        return process_partial_response(event=event, record_handler=_sqs_record, processor=processor, context=context)
    # S3 -> Lambda, EventBridge and MinIO: transient and operator errors propagate so the caller retries.
    outcomes, rejected = [], []
    for change in parse_notification(event):
        try:
            outcomes.append(_apply(change).action)
        except PermanentError as exc:
            rejected.append({"bucket": change.bucket, "key": change.key, "reason": str(exc)})
    return {"applied": outcomes, "rejected": rejected}


def reconcile(event: dict | None = None, context=None) -> dict:
    """Bring the index in step with the bucket (IMGSEARCH_BUCKET): the documented repair for any drift."""
    search = service.get()
    bucket = search.settings.bucket
    if not bucket:
        raise ConfigError("reconcile needs IMGSEARCH_BUCKET, the bucket to compare the index with")
    report = search.ingester.index_source(search.storages.get(bucket), prune=True)
    search.upkeep.after_ingest()
    fixed = report.to_dict()
    drift = report.indexed + report.relabelled + report.deleted + len(report.failed)
    logger.info("reconciled", extra={"bucket": bucket, **fixed, "fixed": drift})
    metrics.add_metric(name=names.DRIFT_FIXED, unit=MetricUnit.Count, value=drift)
    names.publish(metrics)
    return fixed


def _sqs_record(record: SQSRecord) -> None:
    """A PermanentError (the data's fault) parks the message; anything else (TransientError, OperatorError such
    as a bad setting or missing weights) fails the record, so the queue retries it until the operator acts,
    later each time (_back_off)."""
    try:
        changes = parse_notification(record.body)
    except PermanentError as exc:
        _reject(record, None, exc)
        return
    try:
        for change in changes:
            try:
                _apply(change)
            except PermanentError as exc:
                _reject(record, change, exc)
    except Exception:
        _back_off(record)
        raise
    sent_ms = record.attributes.get("SentTimestamp")
    if str(sent_ms).isdigit():  # Lambda's poller always gives it; a hand-made event may not
        metrics.add_metric(name=names.INGEST_LAG_MS, unit=MetricUnit.Milliseconds,
                           value=max(0, time.time() * 1000 - int(sent_ms)))


# Retries of a failed message wait 30 s, 60 s, 2 min, ... up to 15 min: with the queue's maxReceiveCount (8) a
# message outlives about 40 minutes of outage before it is dead-lettered, instead of the few visibility timeouts
# it would take to burn its receives by retrying at once (bench/chaos.py found that).
RETRY_FIRST_S, RETRY_MAX_S = 30, 900


def _back_off(record: SQSRecord) -> None:
    metrics.add_metric(name=names.RETRIED, unit=MetricUnit.Count, value=1)
    receives = int(record.attributes.approximate_receive_count or 1)
    delay = min(RETRY_FIRST_S * 2 ** (receives - 1), RETRY_MAX_S)
    try:
        _sqs().change_message_visibility(QueueUrl=record.queue_url, ReceiptHandle=record.receipt_handle,
                                         VisibilityTimeout=delay)
    except Exception as exc:  # the queue's own visibility timeout applies then
        logger.warning("could not delay the retry", extra={"message_id": record.message_id, "error": str(exc)})


# "relabelled" (new tags or metadata, same bytes) counts as unchanged: no image was embedded
OUTCOME_METRICS = {"indexed": names.INDEXED, "relabelled": names.UNCHANGED, "unchanged": names.UNCHANGED,
                   "deleted": names.DELETED}


@tracer.capture_method(capture_response=False)
def _apply(change: ObjectChange) -> ChangeOutcome:
    search = service.get()
    started = time.perf_counter()
    outcome = search.ingester.apply_change(change)
    if outcome.action in OUTCOME_METRICS:  # not counted: "absent" (a delete of what was never indexed) and
        # "not_indexed" (a tag change of an object that is not indexed)
        metrics.add_metric(name=OUTCOME_METRICS[outcome.action], unit=MetricUnit.Count, value=1)
    if outcome.action == "indexed":
        metrics.add_metric(name=names.INDEX_MS, unit=MetricUnit.Milliseconds,
                           value=(time.perf_counter() - started) * 1000)
    if outcome.action in ("indexed", "unchanged"):  # unchanged: a retry may find its refit not yet done
        search.upkeep.after_ingest()
    logger.info("object synced", extra={"bucket": change.bucket, "key": change.key, "event": change.event_name,
                                        "action": outcome.action, "doc_id": outcome.doc_id})
    return outcome


def _reject(record: SQSRecord, change: ObjectChange | None, exc: Exception) -> None:
    """A permanent failure: log it; with a dead-letter queue configured, park it there with its reason at once
    (retrying a bad image cannot help); otherwise fail the record so the queue's redrive policy parks it."""
    where = {"bucket": change.bucket, "key": change.key} if change else {}
    metrics.add_metric(name=names.FAILED, unit=MetricUnit.Count, value=1)
    logger.error("object rejected", extra={**where, "reason": str(exc), "message_id": record.message_id})
    dlq_url = service.settings().dead_letter_queue_url
    if not dlq_url:
        raise exc
    _sqs().send_message(QueueUrl=dlq_url, MessageBody=record.body, MessageAttributes={
        "reason": _attribute(str(exc)[:1000] or type(exc).__name__),
        "error": _attribute(type(exc).__name__),
        **{name: _attribute(value) for name, value in where.items() if value},
    })


# What SQS accepts in a message attribute (the body's characters): a key no object can have (a NUL, from a forged
# event) must not make the dead letter itself fail, which would retry a permanent failure and lose its reason.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _attribute(value: str) -> dict:
    """A String message attribute, with the characters SQS refuses written as escapes (NUL as \\x00)."""
    text = _NOT_SQS_TEXT.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)
    return {"DataType": "String", "StringValue": text}


@functools.lru_cache(maxsize=1)
def _sqs():
    import boto3

    return boto3.client("sqs")


if __name__ == "__main__":  # a quick manual run: python app.py < event.json
    import sys

    print(json.dumps(handler(json.load(sys.stdin)), indent=2))
