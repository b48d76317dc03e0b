"""`imgsearch backfill`: an existing bucket loaded through the queue, against moto's server (S3 + SQS over HTTP).

The bucket predates the queue (no notifications): every message the queue holds came from the backfill. Keys
are odd on purpose (spaces, '+', '%', '#', '=', accents, an emoji), and a prefix filter leaves some out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from helpers import distinct_colours, png
from imgsearch import service
from imgsearch.backfill import backfill, notification, open_bucket
from imgsearch.errors import BackendUnavailableError, StorageNotAllowedError
from imgsearch.events import parse_notification
from imgsearch.index import doc_id
from imgsearch.local import load_function, run_worker
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import StoredObject

PREFIX = "photos/"
DEEP = "photos/deep/"  # the handful the real model embeds
UNDER_PREFIX = [
    "photos/a.png", "photos/b c.png", "photos/plus+sign.png", "photos/percent%20literal.png",
    "photos/percent%2Bplus.png", "photos/hash#1.png", "photos/eq=and&amp.png", "photos/été 2024/plage.png",
    "photos/日本語/写真.png", "photos/emoji 😀.png", "photos/(paren) [bracket].png", "photos/~tilde'quote.png",
    "photos/semi;colon,comma.png", "photos/q?mark.png", "photos/x/y/z/deep path.png", "photos/Z upper.png",
    "photos/deep/one two.png", "photos/deep/a+b=c.png", "photos/deep/café%.png", "photos/deep/ünï cødé 🙂.png",
    "photos/deep/#hash & space.png",
]
FOLDER_MARKER = "photos/empty folder/"  # what a console's "create folder" makes: 0 bytes, never an image
OUTSIDE = ["photo.png", "photos-2023/a.png", "other/x y.png", "other/photos/a.png", "Photos/upper.png",
           "z+z.png", "éphotos/a.png", "photos.png"]
EXPECTED = sorted(UNDER_PREFIX)  # everything under the prefix but the folder marker


@pytest.fixture
def aws(aws_env):
    """A bucket of 30 objects, no notifications, and an empty queue with a dead-letter queue."""
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    bucket = f"backfill-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    keys = UNDER_PREFIX + OUTSIDE
    for key, colour in zip(keys, distinct_colours(len(keys) + 1)[1:]):
        s3.put_object(Bucket=bucket, Key=key, Body=png(colour), ContentType="image/png")
    s3.put_object(Bucket=bucket, Key=FOLDER_MARKER, Body=b"")
    assert len(keys) + 1 == 30
    queue = sqs.create_queue(QueueName=f"{bucket}-events", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"{bucket}-dlq")["QueueUrl"]
    return {"s3": s3, "sqs": sqs, "bucket": bucket, "queue": queue, "dlq": dlq, "endpoint": aws_env}


@pytest.fixture
def allowed(settings, aws):
    return settings.replace(allowed_buckets=(aws["bucket"],), s3_endpoint_url=aws["endpoint"])


def queued(sqs, queue_url: str) -> list[list]:
    """Every message on the queue (hidden for a minute once read), each as the object changes it reports."""
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       VisibilityTimeout=60).get("Messages", [])
        if not messages:
            return [parse_notification(body) for body in bodies]
        bodies += [m["Body"] for m in messages]


def run_backfill(settings, aws, prefix=PREFIX, sqs=None, **kwargs):
    storage = open_bucket(settings, aws["bucket"])
    checkpoint = kwargs.pop("checkpoint", settings.data_dir / "backfill.json")
    return backfill(storage, prefix, aws["queue"], sqs or aws["sqs"], checkpoint=checkpoint, **kwargs)


class FailsAfter:
    """An SQS client whose connection drops after `batches` SendMessageBatch calls: an interrupted run."""

    def __init__(self, sqs, batches: int):
        self.sqs, self.left, self.meta = sqs, batches, sqs.meta

    def get_queue_attributes(self, **kwargs):
        return self.sqs.get_queue_attributes(**kwargs)

    def send_message_batch(self, **kwargs):
        if self.left == 0:
            raise EndpointConnectionError(endpoint_url="http://sqs.invalid")
        self.left -= 1
        return self.sqs.send_message_batch(**kwargs)


class Refuses(FailsAfter):
    """An SQS client that refuses the entries of some keys (as SQS reports them in "Failed"), `times` times each."""

    def __init__(self, sqs, refuse: dict[str, int]):
        super().__init__(sqs, -1)
        self.refuse = dict(refuse)

    def send_message_batch(self, QueueUrl, Entries):
        keep, failed = [], []
        for entry in Entries:
            key = parse_notification(entry["MessageBody"])[0].key
            if self.refuse.get(key, 0) > 0:
                self.refuse[key] -= 1
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "InternalError", "Message": "busy"})
            else:
                keep.append(entry)
        response = self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=keep) if keep else {}
        return {"Successful": response.get("Successful", []), "Failed": failed + response.get("Failed", [])}


def test_the_message_is_an_s3_notification_the_parser_decodes_to_the_same_key():
    for key in [*UNDER_PREFIX, "a%2Fb", "100%", "+", " lead and trail ", "new\nline", "tab\t"]:
        body = notification("bkt", StoredObject("bkt", key, 7, "abc"))
        record = json.loads(body)["Records"][0]
        assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
        assert " " not in record["s3"]["object"]["key"]  # form-encoded, as S3 writes it
        [change] = parse_notification(body)
        assert (change.bucket, change.key, change.size, change.etag) == ("bkt", key, 7, "abc")
        assert not change.is_removal


def test_enqueues_exactly_one_record_per_object_under_the_prefix(allowed, aws):
    report = run_backfill(allowed, aws)
    assert (report.listed, report.skipped, report.sent, report.batches) == (22, 1, 21, 3)
    assert report.ok and report.failed == [] and report.sent_total == 21
    messages = queued(aws["sqs"], aws["queue"])
    assert all(len(changes) == 1 for changes in messages)  # one object per message
    keys = [changes[0].key for changes in messages]
    assert sorted(keys) == EXPECTED  # each exactly once, decoded to the real key; nothing outside the prefix
    assert {changes[0].bucket for changes in messages} == {aws["bucket"]}


def test_the_messages_index_every_object_through_the_extract_handler(allowed, aws, embedder):
    settings = allowed.replace(dead_letter_queue_url=aws["dlq"])
    search = ImageSearch.open(settings, embedder=embedder)
    extract = load_function("extract")
    service.use(search)
    extract._sqs.cache_clear()  # its DLQ client must see this test's endpoint
    try:
        report = run_backfill(settings, aws, prefix=DEEP)
        assert report.ok and report.sent == 5
        totals = run_worker(aws["queue"], extract.handler, sqs=aws["sqs"], wait_seconds=1, idle_exit=1.5)
        search.index.refresh()
        assert totals == {"received": 5, "succeeded": 5, "failed": 0}
        deep = [key for key in EXPECTED if key.startswith(DEEP)]
        assert sorted(e.key for e in search.index.entries(bucket=aws["bucket"])) == deep
        assert all(search.index.get(doc_id(aws["bucket"], key)) is not None for key in deep)
        assert aws["sqs"].receive_message(QueueUrl=aws["dlq"], WaitTimeSeconds=0).get("Messages", []) == []
    finally:
        service.reset()
        search.close()


def test_an_interrupted_run_resumes_from_its_checkpoint_without_duplicates(allowed, aws):
    everything = sorted(UNDER_PREFIX + OUTSIDE)  # the whole bucket, folder marker aside
    with pytest.raises(BackendUnavailableError, match="run again to continue"):
        run_backfill(allowed, aws, prefix="", sqs=FailsAfter(aws["sqs"], batches=2))
    saved = json.loads((allowed.data_dir / "backfill.json").read_text())
    assert saved["sent_total"] == 20 and not saved["complete"]

    second = run_backfill(allowed, aws, prefix="")
    assert second.resumed_after == saved["last_key"]  # the 20th key enqueued, in S3's order
    assert (second.sent, second.sent_total, second.ok) == (9, 29, True)
    keys = [changes[0].key for changes in queued(aws["sqs"], aws["queue"])]
    assert sorted(keys) == everything  # 20 + 9 messages: each object once, none twice

    third = run_backfill(allowed, aws, prefix="")  # already complete: nothing to send
    assert (third.listed, third.sent, third.ok) == (0, 0, True)
    fourth = run_backfill(allowed, aws, prefix="", restart=True)  # --restart: every object again
    assert (fourth.resumed_after, fourth.sent, fourth.sent_total) == (None, 29, 29)
    assert sorted(changes[0].key for changes in queued(aws["sqs"], aws["queue"])) == everything


def test_refused_entries_are_retried_once_then_reported_and_sent_again_by_the_next_run(allowed, aws):
    flaky, stubborn = "photos/b c.png", "photos/日本語/写真.png"
    report = run_backfill(allowed, aws, sqs=Refuses(aws["sqs"], {flaky: 1, stubborn: 2}))
    assert report.retried == 2 and report.failed == [(stubborn, "InternalError: busy")]
    assert (report.sent, report.complete, report.ok) == (20, True, False)
    again = run_backfill(allowed, aws)  # the checkpoint kept the refused key: only it is sent
    assert (again.listed, again.sent, again.sent_total, again.ok) == (0, 1, 21, True)
    assert sorted(changes[0].key for changes in queued(aws["sqs"], aws["queue"])) == EXPECTED


def test_a_bucket_outside_the_allowlist_is_refused(settings, aws):
    with pytest.raises(StorageNotAllowedError, match="not in IMGSEARCH_ALLOWED_BUCKETS"):
        open_bucket(settings.replace(s3_endpoint_url=aws["endpoint"]), aws["bucket"])


CLI = ("import sys; from imgsearch.cli import main; code = main(sys.argv[1:]); "
       "assert not {'imgsearch.embedder', 'openvino', 'tensorflow'} & set(sys.modules), 'a model was loaded'; "
       "sys.exit(code)")


def cli(*args, env):
    return subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_command_enqueues_allowed_buckets_only_and_loads_no_model(settings, aws):
    env = {**os.environ, "IMGSEARCH_DATA_DIR": str(settings.data_dir), "IMGSEARCH_ALLOWED_BUCKETS": "someone-else"}
    refused = cli("backfill", f"s3://{aws['bucket']}/{PREFIX}", "--queue-url", aws["queue"], env=env)
    assert refused.returncode == 1
    assert f"bucket '{aws['bucket']}' is not in IMGSEARCH_ALLOWED_BUCKETS" in refused.stderr

    env["IMGSEARCH_ALLOWED_BUCKETS"] = aws["bucket"]
    done = cli("backfill", f"s3://{aws['bucket']}/{PREFIX}", "--queue-url", aws["queue"], "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["listed"], report["sent"], report["batches"], report["failed"]) == (22, 21, 3, [])
    assert report["checkpoint"].startswith(str(settings.data_dir / "backfill"))
    assert len(queued(aws["sqs"], aws["queue"])) == 21
