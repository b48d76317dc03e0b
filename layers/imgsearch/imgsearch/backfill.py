"""`imgsearch backfill`: load an existing bucket through the queue, as if every object had just been uploaded.

list -> batches -> send, with a checkpoint. The bucket is listed in S3's order; each object becomes one SQS
message holding one S3 "ObjectCreated:Put" notification record, the shape S3 itself sends for an upload (key
form-encoded as S3 encodes it, decoded again by events.parse_notification), so the extract function loads it
with the same code path, retries and dead-letter handling as a live upload, and any number of functions share
the work. One record per message keeps that granularity: a transient failure retries, and a bad image
dead-letters, that one object only. Messages go out 10 per SendMessageBatch; entries SQS refuses are sent once
more, then reported.

Resuming. After each batch the checkpoint (a small JSON file, one per bucket + prefix + queue) records the last
key whose message SQS acknowledged or refused twice, and the refused keys. A rerun lists from there (S3's
StartAfter) and sends the refused keys again first; `restart` ignores it. The guarantee: every object under the
prefix is enqueued at least once or reported as failed, and an interruption (a crash, Ctrl-C, SQS unreachable)
re-sends at most the one batch (10 messages) whose acknowledgement it interrupted. Duplicates are harmless: the
handler reads the object's current state and skips an unchanged one.

Only buckets the settings allow are listed (storages.Storages decides): the extract function would refuse
events for any other. No model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote_plus

from .config import Settings
from .errors import BackendUnavailableError, InvalidRequestError, PermanentError
from .storage import S3Storage, StoredObject
from .storages import Storages

BATCH = 10  # SendMessageBatch's limit
EVENT_NAME = "ObjectCreated:Put"
SOURCE = "imgsearch-backfill"  # userIdentity.principalId and configurationId: where a message came from


@dataclass
class BackfillReport:
    bucket: str
    prefix: str
    queue_url: str
    checkpoint: str
    resumed_after: str | None = None  # the checkpoint's last key, when this run continued a previous one
    listed: int = 0  # objects listed by this run (after the checkpoint)
    skipped: int = 0  # folder markers ("key/", 0 bytes): never images
    sent: int = 0  # messages SQS accepted in this run
    batches: int = 0  # SendMessageBatch calls, retries included
    retried: int = 0  # entries sent a second time after SQS refused them
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) SQS refused twice
    sent_total: int = 0  # messages accepted over every run of this checkpoint
    complete: bool = False  # the listing reached its end
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.complete and not self.failed

    def to_dict(self) -> dict:
        return {"bucket": self.bucket, "prefix": self.prefix, "queue_url": self.queue_url,
                "checkpoint": self.checkpoint, "resumed_after": self.resumed_after, "listed": self.listed,
                "skipped": self.skipped, "sent": self.sent, "batches": self.batches, "retried": self.retried,
                "failed": [{"key": k, "reason": r} for k, r in self.failed], "sent_total": self.sent_total,
                "complete": self.complete, "ok": self.ok, "seconds": round(self.seconds, 3)}


def parse_source(source: str) -> tuple[str, str]:
    """'s3://bucket[/prefix]' -> (bucket, prefix)."""
    if not source.startswith("s3://"):
        raise InvalidRequestError(f"backfill reads S3 buckets only: s3://BUCKET[/PREFIX], not {source!r}")
    bucket, _, prefix = source[len("s3://"):].partition("/")
    if not bucket:
        raise InvalidRequestError(f"no bucket in {source!r}; use s3://BUCKET[/PREFIX]")
    return bucket, prefix


def open_bucket(settings: Settings, bucket: str) -> S3Storage:
    """The bucket's storage if the settings allow it (IMGSEARCH_ALLOWED_BUCKETS, IMGSEARCH_BUCKET); no model."""
    storage = Storages(settings).get(bucket)  # StorageNotAllowedError for any other bucket
    if not isinstance(storage, S3Storage):
        raise InvalidRequestError(f"{bucket!r} is a folder; backfill reads S3 buckets only")
    return storage


def default_checkpoint(data_dir: Path, bucket: str, prefix: str, queue_url: str) -> Path:
    digest = hashlib.sha256(json.dumps([bucket, prefix, queue_url]).encode()).hexdigest()[:16]
    return data_dir / "backfill" / f"{digest}.json"


def notification(bucket: str, obj: StoredObject, *, region: str = "us-east-1") -> str:
    """The message body for one object: an S3 ObjectCreated:Put notification with one record."""
    record = {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region,
        "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": EVENT_NAME, "userIdentity": {"principalId": SOURCE},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": SOURCE,
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               # S3's encoding: form-style ("a b" -> "a+b", "+" -> "%2B", "é" -> "%C3%A9"), "/" kept.
               "object": {"key": quote_plus(obj.key, safe="/"),
                          **({"size": obj.size} if obj.size is not None else {}),
                          **({"eTag": obj.etag} if obj.etag else {})}},
    }
    return json.dumps({"Records": [record]}, ensure_ascii=False, separators=(",", ":"))


class Checkpoint:
    """The last key handled and the keys SQS refused, in a JSON file written atomically after every batch."""

    def __init__(self, path: Path, bucket: str, prefix: str, queue_url: str):
        self.path, self.identity = path, {"bucket": bucket, "prefix": prefix, "queue_url": queue_url}
        self.last_key: str | None = None
        self.failed: list[str] = []
        self.sent_total = 0
        self.complete = False

    def load(self) -> "Checkpoint":
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return self
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot read the checkpoint {self.path}: {exc}; --restart ignores it") from None
        if any(data.get(k) != v for k, v in self.identity.items()):
            raise PermanentError(f"the checkpoint {self.path} belongs to another backfill "
                                 f"(s3://{data.get('bucket')}/{data.get('prefix')} -> {data.get('queue_url')})")
        self.last_key, self.failed = data.get("last_key"), list(data.get("failed", []))
        self.sent_total, self.complete = int(data.get("sent_total", 0)), bool(data.get("complete"))
        return self

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {**self.identity, "last_key": self.last_key, "failed": self.failed, "sent_total": self.sent_total,
                "complete": self.complete, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
        os.replace(temp, self.path)  # a reader (or the next run) sees the old file or the new one, never half


def backfill(storage: S3Storage, prefix: str, queue_url: str, sqs, *, checkpoint: Path, restart: bool = False,
             progress: Callable[[int], None] | None = None, region: str | None = None) -> BackfillReport:
    """Enqueue one ObjectCreated notification per object under prefix. Raises BackendUnavailableError when a
    SendMessageBatch call itself fails (after boto3's retries), with the checkpoint at the last batch SQS
    acknowledged: run again to continue."""
    bucket = storage.bucket
    state = Checkpoint(checkpoint, bucket, prefix, queue_url)
    if not restart:
        state.load()
    report = BackfillReport(bucket, prefix, queue_url, str(checkpoint), resumed_after=state.last_key,
                            sent_total=state.sent_total)
    region = region or getattr(getattr(sqs, "meta", None), "region_name", None) or "us-east-1"
    started = time.monotonic()
    check_queue(sqs, queue_url)
    if state.complete and not state.failed:  # nothing left from the previous run
        report.complete, report.seconds = True, time.monotonic() - started
        return report
    retry_keys, state.failed = state.failed, []

    def send(batch: list[StoredObject], advance: bool) -> None:
        refused = _send_batch(sqs, queue_url, [(o, notification(bucket, o, region=region)) for o in batch], report)
        state.failed.extend(key for key, _ in refused)
        report.failed.extend(refused)
        state.sent_total += len(batch) - len(refused)
        report.sent_total = state.sent_total
        if advance:
            state.last_key = batch[-1].key
        state.save()
        if progress:
            progress(len(batch))

    try:
        # The keys SQS refused last time, first (their size and ETag are not kept: the handler HEADs anyway).
        for batch in _chunks((StoredObject(bucket, key, None, None) for key in retry_keys), BATCH):
            send(batch, advance=False)
        retry_keys = []
        if state.complete:
            report.complete = True
            return report
        for batch in _chunks(_objects(storage, prefix, state.last_key, report), BATCH):
            send(batch, advance=True)
        state.complete = report.complete = True
        state.save()
    finally:
        if retry_keys:  # interrupted while resending them: keep them for the next run
            state.failed = list(dict.fromkeys(state.failed + retry_keys))
            state.save()
        report.seconds = time.monotonic() - started
    return report


def _objects(storage: S3Storage, prefix: str, after: str | None, report: BackfillReport) -> Iterator[StoredObject]:
    for obj in storage.list(prefix, start_after=after or ""):
        report.listed += 1
        if obj.key.endswith("/") and not obj.size:  # a console "folder": never an image
            report.skipped += 1
            continue
        yield obj


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _send_batch(sqs, queue_url: str, entries: list[tuple[StoredObject, str]],
                report: BackfillReport) -> list[tuple[str, str]]:
    """Send up to 10 messages; entries SQS refuses are sent once more. -> (key, reason) of those refused twice."""
    pending = {str(i): entry for i, entry in enumerate(entries)}
    reasons: dict[str, str] = {}
    for attempt in range(2):
        if attempt:
            time.sleep(0.2)  # a throttled entry gets a moment
            report.retried += len(pending)
        response = _call(sqs, queue_url, [{"Id": i, "MessageBody": body} for i, (_, body) in pending.items()])
        report.batches += 1
        refused = {f["Id"]: f"{f.get('Code', '?')}: {f.get('Message', '')}".strip(": ")
                   for f in response.get("Failed", [])}
        report.sent += len(pending) - len(refused)
        reasons = refused
        pending = {i: pending[i] for i in refused if i in pending}
        if not pending:
            break
    return [(obj.key, reasons[i]) for i, (obj, _) in pending.items()]


def check_queue(sqs, queue_url: str) -> None:
    """Fail before listing anything if the queue is not there (or not ours to write)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PermanentError(f"queue {queue_url}: {error.get('Code', '?')} {error.get('Message', '')}".strip()) \
            from None
    except BotoCoreError as exc:
        raise BackendUnavailableError(f"queue {queue_url} unreachable: {exc}") from exc


def _call(sqs, queue_url: str, entries: list[dict]) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except (BotoCoreError, ClientError) as exc:
        raise BackendUnavailableError(f"the queue did not take a batch ({exc}); the checkpoint is at the last "
                                      "batch it acknowledged: run again to continue") from exc
