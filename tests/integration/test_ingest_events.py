"""Acceptance: a file dropped into the bucket becomes searchable. All over HTTP against moto's server
(S3 + SQS with real notifications), the real model, and each index backend (embedded, real Elasticsearch)."""

from __future__ import annotations

import time
import uuid

import pytest

from helpers import emf_metrics, make_bucket_with_queue, reencoded_copy, without_tag_changes
from imgsearch import service
from imgsearch.index import doc_id
from imgsearch.local import load_function, run_worker
from imgsearch.options import SearchOptions
from imgsearch.pipeline import ImageSearch

ODD_KEY = "holiday photos/été 2024/beach + sun #1.jpg"


@pytest.fixture
def stack(aws_env, index_settings, embedder, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # the handler's metric lines: some tests read them
    bucket = f"images-{uuid.uuid4().hex[:8]}"
    aws = make_bucket_with_queue(aws_env, bucket)
    settings = index_settings.replace(bucket=bucket, dead_letter_queue_url=aws["dlq"], s3_endpoint_url=aws_env)
    search = ImageSearch.open(settings, embedder=embedder)
    extract = load_function("extract")
    service.use(search)
    extract._sqs.cache_clear()  # its DLQ client must see this test's endpoint

    def drain():
        totals = run_worker(aws["queue"], extract.handler, sqs=aws["sqs"], wait_seconds=1, idle_exit=1.5)
        search.index.refresh()
        return totals

    yield {**aws, "bucket": bucket, "search": search, "drain": drain}
    service.reset()
    search.close()


def dead_letters(stack) -> list[dict]:
    messages = stack["sqs"].receive_message(QueueUrl=stack["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                            MessageAttributeNames=["All"]).get("Messages", [])
    return [{name: attr["StringValue"] for name, attr in m.get("MessageAttributes", {}).items()} for m in messages]


def test_uploads_become_searchable_and_the_index_follows_the_bucket(stack, seed_paths, capsys):
    s3, bucket, search = stack["s3"], stack["bucket"], stack["search"]
    keys = [f"seed/{p.name}" for p in seed_paths]
    for key, path in zip(keys, seed_paths):
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key=ODD_KEY, Body=seed_paths[0].read_bytes())
    capsys.readouterr()
    totals = stack["drain"]()
    assert totals["failed"] == 0
    assert search.index.count() == len(keys) + 1
    # What CloudWatch gets (EMF lines): one count and one time per image, the queue wait of every message.
    metrics = emf_metrics(capsys.readouterr().out)
    assert sum(metrics["ImagesIndexed"]) == len(keys) + 1 and "ImagesFailed" not in metrics
    assert len(metrics["IndexMs"]) == len(keys) + 1 and min(metrics["IndexMs"]) > 0
    assert len(metrics["IngestLagMs"]) >= len(keys) + 1 and 0 <= min(metrics["IngestLagMs"]) < 600_000

    # Each re-encoded copy finds its original first, with a presigned URL that serves the original bytes.
    import requests
    for key, path in zip(keys, seed_paths):
        hits = search.searcher.search_image(reencoded_copy(path), SearchOptions(key_prefix="seed/", page_size=3)).hits
        assert hits[0].key == key and hits[0].score > hits[1].score
        assert requests.get(hits[0].url, timeout=10).content == path.read_bytes()

    # The odd key round-trips: stored under its real name, found by it.
    assert search.searcher.image_info(bucket, ODD_KEY)["key"] == ODD_KEY

    # Re-uploading leaves one document; deleting removes it; both only through events.
    s3.put_object(Bucket=bucket, Key=keys[1], Body=seed_paths[1].read_bytes())
    s3.delete_object(Bucket=bucket, Key=keys[0])
    s3.delete_object(Bucket=bucket, Key=ODD_KEY)
    stack["drain"]()
    assert search.index.count() == len(keys) - 1
    assert sum(emf_metrics(capsys.readouterr().out)["ImagesDeleted"]) == 2
    assert search.index.get(doc_id(bucket, keys[0])) is None
    assert search.index.get(doc_id(bucket, ODD_KEY)) is None
    assert sum(1 for e in search.index.entries(bucket=bucket) if e.key == keys[1]) == 1


def test_bad_uploads_are_dead_lettered_with_their_reason_and_nothing_else_is_lost(stack, seed_paths, capsys):
    s3, bucket, search = stack["s3"], stack["bucket"], stack["search"]
    for path in seed_paths[:2]:
        s3.put_object(Bucket=bucket, Key=path.name, Body=path.read_bytes())
    stack["drain"]()
    before = {e.doc_id for e in search.index.entries()}
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"this is not an image")
    s3.put_object(Bucket=bucket, Key="broken.jpg", Body=seed_paths[2].read_bytes()[:2000])
    capsys.readouterr()
    totals = stack["drain"]()
    assert totals["failed"] == 0  # parked in the dead-letter queue at once, not retried
    metrics = emf_metrics(capsys.readouterr().out)
    assert sum(metrics["ImagesFailed"]) == 2 and "ImagesIndexed" not in metrics and "ImagesRetried" not in metrics
    letters = sorted(dead_letters(stack), key=lambda d: d["key"])
    assert [d["key"] for d in letters] == ["broken.jpg", "notes.txt"]
    assert "truncated" in letters[0]["reason"] and "not an image" in letters[1]["reason"]
    assert {e.doc_id for e in search.index.entries()} == before


def test_duplicate_and_out_of_order_events_converge(stack, seed_paths):
    """A stale 'created' event arriving after the delete must not resurrect the document."""
    s3, bucket, search = stack["s3"], stack["bucket"], stack["search"]
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=seed_paths[0].read_bytes())
    created = stack["sqs"].receive_message(QueueUrl=stack["queue"], MaxNumberOfMessages=10, WaitTimeSeconds=2)
    bodies = [m["Body"] for m in created.get("Messages", []) if "ObjectCreated" in m["Body"]]
    assert bodies, "moto delivered no ObjectCreated notification"
    stack["drain"]()  # nothing left but what visibility hides; the handler below replays by hand
    s3.delete_object(Bucket=bucket, Key="a.jpg")
    for _ in range(2):  # the delete notification, then the stale create (twice: a duplicate)
        stack["sqs"].send_message(QueueUrl=stack["queue"], MessageBody=bodies[0])
    stack["drain"]()
    assert search.index.get(doc_id(bucket, "a.jpg")) is None


def test_stats_show_how_far_ingest_is_behind(stack, seed_paths):
    """GET /stats and `imgsearch stats` (ImageSearch.stats): events waiting in the queue, the oldest one's age
    as CloudWatch reports it, and the dead letters; a queue that cannot be read is "unavailable", quickly."""
    import boto3

    s3, bucket, sqs = stack["s3"], stack["bucket"], stack["sqs"]
    without_tag_changes(s3, sqs, bucket, stack["queue"])  # one event per upload (moto adds a tagging one)
    search = ImageSearch.open(stack["search"].settings.replace(queue_url=stack["queue"]),
                              embedder=stack["search"].embedder)
    stack["drain"]()  # whatever setting up the bucket queued (moto's s3:TestEvent)
    for path in seed_paths[:3]:
        s3.put_object(Bucket=bucket, Key=path.name, Body=path.read_bytes())
    queue_name = stack["queue"].rstrip("/").rsplit("/", 1)[-1]
    boto3.client("cloudwatch").put_metric_data(Namespace="AWS/SQS", MetricData=[{  # what AWS publishes each minute
        "MetricName": "ApproximateAgeOfOldestMessage", "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
        "Value": 42.0, "Unit": "Seconds"}])
    assert search.stats()["ingest"] == {
        "queue": {"waiting": 3, "in_flight": 0, "delayed": 0, "oldest_age_s": 42.0}, "dead_letters": 0}

    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"this is not an image")
    stack["drain"]()
    ingest = search.stats()["ingest"]
    assert ingest["queue"]["waiting"] == ingest["queue"]["in_flight"] == 0 and ingest["dead_letters"] == 1

    gone = ImageSearch.open(search.settings.replace(queue_url=stack["queue"] + "-gone"), embedder=search.embedder)
    started = time.monotonic()
    assert gone.stats()["ingest"]["queue"] == "unavailable"
    assert time.monotonic() - started < 10
    search.close()
    gone.close()


def test_the_buckets_own_labels_filter_searches_and_a_tag_change_follows(stack, seed_paths):
    """Tags, x-amz-meta-* metadata and the folder are indexed from the object; search filters on them; a tag
    change on S3 (an ObjectTagging event) updates the document without embedding the image again."""
    from imgsearch.labels import parse_filters

    s3, bucket, search = stack["s3"], stack["bucket"], stack["search"]
    s3.put_object(Bucket=bucket, Key="covers/a.jpg", Body=seed_paths[0].read_bytes(), Tagging="color=red&shelf=2",
                  Metadata={"Author": "ann"})
    s3.put_object(Bucket=bucket, Key="covers/b.jpg", Body=seed_paths[1].read_bytes(), Tagging="color=blue")
    s3.put_object(Bucket=bucket, Key="other/c.jpg", Body=seed_paths[2].read_bytes(), Tagging="color=red")
    assert stack["drain"]()["failed"] == 0
    info = search.searcher.image_info(bucket, "covers/a.jpg")
    assert (info["folder"], info["tags"], info["user_metadata"]) == ("covers/", {"color": "red", "shelf": "2"},
                                                                     {"author": "ann"})

    def found(*terms):
        options = SearchOptions(filters=parse_filters(list(terms)), rerank=False)
        return sorted(hit.key for hit in search.searcher.search_image(seed_paths[0].read_bytes(), options).hits)

    assert found("tag.color=red") == ["covers/a.jpg", "other/c.jpg"]
    assert found("tag.color=red", "folder=covers/") == ["covers/a.jpg"]
    assert found("meta.author=ann") == ["covers/a.jpg"]
    indexed_at = info["indexed_at"]

    s3.put_object_tagging(Bucket=bucket, Key="covers/b.jpg", Tagging={"TagSet": [{"Key": "color", "Value": "red"}]})
    s3.delete_object_tagging(Bucket=bucket, Key="covers/a.jpg")
    stack["drain"]()
    assert found("tag.color=red") == ["covers/b.jpg", "other/c.jpg"]
    relabelled = search.searcher.image_info(bucket, "covers/a.jpg")
    assert relabelled["tags"] == {} and relabelled["indexed_at"] == indexed_at  # not embedded again
