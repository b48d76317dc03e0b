"""The extract handler's routing and failure reporting, in-process with small fakes: one bad message never
redelivers the batch, an index outage is retried, a bad image is parked with its reason."""

from __future__ import annotations

import json

import pytest

from imgsearch import service
from imgsearch.config import Settings
from imgsearch.errors import BackendUnavailableError
from imgsearch.index.embedded import EmbeddedIndex
from imgsearch.local import load_function
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage
from helpers import ColourEmbedder, png


class FlakyIndex(EmbeddedIndex):
    """An embedded index whose writes fail while `down` is set, as an unreachable Elasticsearch would."""

    down = False

    def upsert(self, documents):
        if self.down:
            raise BackendUnavailableError("Elasticsearch unreachable: connection refused")
        super().upsert(documents)


def s3_body(bucket: str, key: str, name: str = "ObjectCreated:Put") -> str:
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": name,
                                    "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})


def sqs_event(*bodies: str) -> dict:
    return {"Records": [{"messageId": f"m{i}", "receiptHandle": "r", "body": body, "attributes": {},
                         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "awsRegion": "us-east-1"}
                        for i, body in enumerate(bodies)]}


@pytest.fixture
def extract(tmp_path, monkeypatch):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    embedder = ColourEmbedder()
    index = FlakyIndex(tmp_path / "data", model_id=embedder.model_id)
    index.ensure_index()
    search = ImageSearch(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=embedder, index=index)
    search.storages.add(folder)
    module = load_function("extract")
    service.use(search)
    yield module, folder, index
    service.reset()


def test_one_bad_message_fails_alone(extract):
    module, folder, index = extract
    folder.put("good.png", png((255, 0, 0)))
    folder.put("bad.png", b"not an image")
    result = module.handler(sqs_event(s3_body(folder.bucket, "good.png"), s3_body(folder.bucket, "bad.png"),
                                      "{not json"), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}
    assert index.count() == 1


def test_index_outage_is_retried_not_dropped(extract):
    module, folder, index = extract
    folder.put("a b+c.png", png((0, 255, 0)))
    index.down = True
    event = sqs_event(s3_body(folder.bucket, "a+b%2Bc.png"))
    assert module.handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    index.down = False
    assert module.handler(event, None) == {"batchItemFailures": []}
    assert [e.key for e in index.entries()] == ["a b+c.png"]


def test_direct_s3_and_eventbridge_invocations_report_rejections(extract):
    module, folder, index = extract
    folder.put("x.png", png((0, 0, 255)))
    folder.put("y.txt", b"text")
    result = module.handler(json.loads(s3_body(folder.bucket, "x.png")), None)
    assert result == {"applied": ["indexed"], "rejected": []}
    bridge = {"source": "aws.s3", "detail-type": "Object Created", "detail": {
        "bucket": {"name": folder.bucket}, "object": {"key": "y.txt"}}}
    rejected = module.handler(bridge, None)["rejected"]
    assert rejected[0]["key"] == "y.txt" and "not an image" in rejected[0]["reason"]
    folder.put("z.png", png((9, 9, 9)))
    index.down = True
    with pytest.raises(BackendUnavailableError):  # raised, so that Lambda's async invoker retries
        module.handler(json.loads(s3_body(folder.bucket, "z.png")), None)


def test_the_scheduled_reconcile_repairs_drift_and_then_finds_nothing(extract, tmp_path):
    """What no event delivered gets indexed, a document whose object is gone is dropped; a second run fixes
    nothing. Without a configured bucket it is the operator's to fix (retried, never silent)."""
    from imgsearch.errors import ConfigError

    module, folder, index = extract
    search = service.get()
    service.use(ImageSearch(search.settings.replace(bucket=folder.bucket), embedder=search.embedder, index=index))
    service.get().storages.add(folder)
    folder.put("missed.png", png((0, 0, 255)))  # uploaded while the events were lost
    folder.put("gone.png", png((255, 255, 0)))
    module.handler({"Records": [json.loads(s3_body(folder.bucket, "gone.png"))["Records"][0]]})
    (folder.root / "gone.png").unlink()  # deleted, its event lost
    assert module.reconcile({}) == {"indexed": 1, "relabelled": 0, "unchanged": 0, "deleted": 1, "failed": []}
    assert [e.key for e in index.entries()] == ["missed.png"]
    assert module.reconcile({}) == {"indexed": 0, "relabelled": 0, "unchanged": 1, "deleted": 0, "failed": []}
    service.use(ImageSearch(search.settings.replace(bucket=None), embedder=search.embedder, index=index))
    with pytest.raises(ConfigError, match="IMGSEARCH_BUCKET"):
        module.reconcile({})


def test_a_failed_message_is_retried_later_each_time(extract, monkeypatch):
    """An outage must not burn a message's receives in a few minutes: each retry waits twice as long as the one
    before (30 s, 60 s, ... at most 15 min), set on the message itself."""
    module, folder, index = extract
    calls = []

    class Queue:
        def change_message_visibility(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(module, "_sqs", lambda: Queue())
    folder.put("a.png", png((0, 0, 255)))
    index.down = True
    for receives in (1, 4, 9):
        event = sqs_event(s3_body(folder.bucket, "a.png"))
        event["Records"][0]["attributes"] = {"ApproximateReceiveCount": str(receives)}
        assert module.handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert [c["VisibilityTimeout"] for c in calls] == [30, 240, 900]
    assert calls[0]["QueueUrl"].endswith("/1/q") and calls[0]["ReceiptHandle"] == "r"
