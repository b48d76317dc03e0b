"""Every way an object-change event arrives, parsed into one record type.

This is the only place that knows event shapes, and the only place that decodes keys: S3 notifications
(direct, wrapped in SQS, or in SNS inside SQS), MinIO webhooks, and EventBridge. Events are only hints:
the pipeline reads the object's current state before acting, so the kind of event never decides the outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from .errors import PermanentError

MAX_RECORDS = 100  # object changes per message: more could time out the whole batch it came in
MAX_NESTING = 4  # envelopes inside envelopes (SQS > SNS > S3 needs 3)


class UnrecognisedEventError(PermanentError):
    """The payload is not an object-change event we know (or is malformed, or too big): retrying cannot help."""


@dataclass(frozen=True)
class ObjectChange:
    bucket: str
    key: str  # decoded: what S3's API expects
    event_name: str  # e.g. "ObjectCreated:Put", "ObjectRemoved:Delete", "ObjectTagging:Put", "Object Created"
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None

    @property
    def is_tag_change(self) -> bool:
        """S3 "ObjectTagging:Put/Delete", MinIO "ObjectCreated:PutTagging/DeleteTagging", EventBridge "Object Tags
        Added/Deleted"."""
        return "Tagging" in self.event_name or self.event_name.startswith("Object Tags")

    @property
    def is_removal(self) -> bool:
        # EventBridge says "Object Deleted" for a removal and "Object Tags Deleted" for a tag change
        return "Removed" in self.event_name or self.event_name == "Object Deleted"


def parse_notification(payload: Any) -> list[ObjectChange]:
    """One notification (a dict or its JSON text) -> the object changes it reports; [] for test events.
    Anything else, malformed or with more than MAX_RECORDS changes, is an UnrecognisedEventError with a reason."""
    try:
        changes = _parse(payload, depth=0)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a shape we did not expect, anywhere
        raise UnrecognisedEventError(f"malformed event ({type(exc).__name__}: {str(exc)[:200]})") from None
    if len(changes) > MAX_RECORDS:
        raise UnrecognisedEventError(f"{len(changes)} object changes in one message; at most {MAX_RECORDS}")
    return changes


def _parse(payload: Any, depth: int) -> list[ObjectChange]:
    if depth > MAX_NESTING:
        raise UnrecognisedEventError(f"envelopes nested more than {MAX_NESTING} deep")
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise UnrecognisedEventError("message body is not JSON") from None
    if not isinstance(payload, dict):
        raise UnrecognisedEventError(f"expected a JSON object, got {type(payload).__name__}")
    if payload.get("Event") == "s3:TestEvent":  # sent once when a notification is configured
        return []
    if payload.get("Type") == "Notification" and "Message" in payload:  # S3 -> SNS -> SQS
        return _parse(payload["Message"], depth + 1)
    if payload.get("source") == "aws.s3" and "detail" in payload:
        return [_from_eventbridge(payload)]
    records = payload.get("Records")
    if isinstance(records, list):
        if len(records) > MAX_RECORDS:
            raise UnrecognisedEventError(f"{len(records)} records in one message; at most {MAX_RECORDS}")
        changes = []
        for record in records:
            source = record.get("eventSource") or record.get("EventSource")
            if source in ("aws:s3", "minio:s3"):
                changes.append(_from_s3_record(record))
            elif source == "aws:sqs":
                changes.extend(_parse(record.get("body"), depth + 1))
            elif source == "aws:sns":
                changes.extend(_parse(record["Sns"]["Message"], depth + 1))
            else:
                raise UnrecognisedEventError(f"record from unknown source {source!r}")
        return changes
    raise UnrecognisedEventError(f"not an object-change event (keys: {', '.join(sorted(payload)[:8])})")


def _from_s3_record(record: dict) -> ObjectChange:
    bucket, obj, raw_key = _bucket_and_object(record.get("s3"), "S3 record", "s3.")
    return ObjectChange(
        bucket=bucket,
        # S3, MinIO, LocalStack and moto all encode keys form-style ("a b" -> "a+b", "é" -> "%C3%A9").
        key=unquote_plus(raw_key),
        event_name=_strip_prefix(record.get("eventName", "")),
        size=obj.get("size"),
        etag=(obj.get("eTag") or obj.get("etag") or None),
        version_id=obj.get("versionId"),
        sequencer=obj.get("sequencer"),
        event_time=record.get("eventTime"),
    )


def _from_eventbridge(event: dict) -> ObjectChange:
    bucket, obj, key = _bucket_and_object(event.get("detail"), "EventBridge S3 event", "detail.")
    return ObjectChange(
        bucket=bucket,
        key=key,  # EventBridge carries keys as they are, not form-encoded
        event_name=event.get("detail-type", ""),
        size=obj.get("size"),
        etag=obj.get("etag"),
        version_id=obj.get("version-id"),
        sequencer=obj.get("sequencer"),
        event_time=event.get("time"),
    )


def _bucket_and_object(where: Any, shape: str, path: str) -> tuple[str, dict, str]:
    """(bucket name, object, raw key) from {"bucket": {"name"}, "object": {"key"}}, the shape S3 records and
    EventBridge details share."""
    try:
        bucket, obj = where["bucket"]["name"], where["object"]
        key = obj["key"]
    except (KeyError, TypeError):
        raise UnrecognisedEventError(f"{shape} without {path}bucket.name / {path}object.key") from None
    _check_names(bucket, key)
    return bucket, obj, key


def _check_names(bucket: Any, key: Any) -> None:
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        raise UnrecognisedEventError("the bucket name and the key must be non-empty strings")


def _strip_prefix(name: str) -> str:
    return name[3:] if name.startswith("s3:") else name  # MinIO writes "s3:ObjectCreated:Put"
