"""Every way an object-change event arrives parses into the same record, with the key decoded once.
Sample events under tests/events/ were captured from the real emulators (moto, LocalStack, MinIO) where named so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgsearch.events import ObjectChange, UnrecognisedEventError, parse_notification

EVENTS = Path(__file__).resolve().parents[1] / "events"
ODD_KEY = "photos/sunset at the beach é+1.jpg"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def sqs_batch(*bodies) -> dict:
    return {"Records": [{"messageId": str(i), "receiptHandle": "r", "body": json.dumps(b), "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "attributes": {}}
                        for i, b in enumerate(bodies)]}


def test_s3_notification_from_moto_decodes_plus_and_percent():
    [change] = parse_notification(load("moto-created.json"))
    assert change == ObjectChange(bucket="images", key=ODD_KEY, event_name="ObjectCreated:Put", size=1,
                                  etag=change.etag, event_time=change.event_time)
    assert not change.is_removal
    [removed] = parse_notification(load("moto-removed.json"))
    assert removed.key == ODD_KEY and removed.is_removal


def test_sqs_wrapped_and_text_bodies_and_test_event():
    batch = sqs_batch(load("moto-test-event.json"), load("moto-created.json"))
    assert [c.key for c in parse_notification(batch)] == [ODD_KEY]
    assert parse_notification(json.dumps(load("moto-test-event.json"))) == []


def test_sns_envelope_inside_sqs():
    sns = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(load("moto-created.json"))}
    assert parse_notification(sqs_batch(sns))[0].key == ODD_KEY


def test_eventbridge_keys_are_taken_as_they_are():
    [change] = parse_notification(load("eventbridge-created.json"))
    assert change.key == "photos/2023-08-08T14:03:40.jpg" and change.bucket == "images"
    assert change.event_name == "Object Created" and change.version_id and change.sequencer


def test_minio_webhook_payload_decodes_its_s3_record():
    event = load("minio-created.json")
    [change] = parse_notification(event)
    assert (change.bucket, change.key, change.event_name) == ("images", ODD_KEY, "ObjectCreated:Put")
    assert event["Key"] == f"{change.bucket}/{change.key}"  # MinIO's own top-level field agrees


@pytest.mark.parametrize("name, removal", [("localstack-created.json", False), ("localstack-removed.json", True)])
def test_localstack_notifications_decode_percent_twenty(name, removal):
    [change] = parse_notification(load(name))
    assert change.key == ODD_KEY and change.is_removal is removal and change.sequencer
    assert parse_notification(load("localstack-test-event.json")) == []


@pytest.mark.parametrize("payload", ["not json", "[]", json.dumps({"hello": "world"}),
                                     json.dumps({"Records": [{"eventSource": "aws:dynamodb"}]}),
                                     json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {}}]})])
def test_unrecognised_payloads_are_permanent_errors(payload):
    with pytest.raises(UnrecognisedEventError):
        parse_notification(payload)


@pytest.mark.parametrize("name, tag_change, removal", [
    ("ObjectTagging:Put", True, False), ("ObjectTagging:Delete", True, False),
    ("ObjectCreated:PutTagging", True, False), ("ObjectCreated:DeleteTagging", True, False),  # MinIO
    ("Object Tags Added", True, False), ("Object Tags Deleted", True, False),  # EventBridge
    ("ObjectCreated:Put", False, False), ("ObjectRemoved:Delete", False, True), ("Object Deleted", False, True)])
def test_tag_changes_are_told_apart_from_creations_and_removals(name, tag_change, removal):
    change = ObjectChange(bucket="images", key="a.jpg", event_name=name)
    assert (change.is_tag_change, change.is_removal) == (tag_change, removal)
