"""Acceptance: a file dropped into the bucket becomes searchable. All over HTTP against moto's server
(S3 + SQS with real notifications), the real model, and each index backend (embedded, real Elasticsearch)."""

from __future__ import annotations

import uuid

import pytest

from helpers import make_bucket_with_queue, reencoded_copy
from imgsearch import service
from imgsearch.index import doc_id
from imgsearch.local import load_function, run_worker
from imgsearch.options import SearchOptions
from imgsearch.pipeline import ImageSearch

ODD_KEY = "holiday photos/été 2024/beach + sun #1.jpg"


@pytest.fixture
def stack(aws_env, index_settings, embedder):
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


def test_uploads_become_searchable_and_the_index_follows_the_bucket(stack, seed_paths):
    s3, bucket, search = stack["s3"], stack["bucket"], stack["search"]
    keys = [f"seed/{p.name}" for p in seed_paths]
    for key, path in zip(keys, seed_paths):
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key=ODD_KEY, Body=seed_paths[0].read_bytes())
    totals = stack["drain"]()
    assert totals["failed"] == 0
    assert search.index.count() == len(keys) + 1

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
    assert search.index.get(doc_id(bucket, keys[0])) is None
    assert search.index.get(doc_id(bucket, ODD_KEY)) is None
    assert sum(1 for e in search.index.entries(bucket=bucket) if e.key == keys[1]) == 1


def test_bad_uploads_are_dead_lettered_with_their_reason_and_nothing_else_is_lost(stack, seed_paths):
    s3, bucket, search = stack["s3"], stack["bucket"], stack["search"]
    for path in seed_paths[:2]:
        s3.put_object(Bucket=bucket, Key=path.name, Body=path.read_bytes())
    stack["drain"]()
    before = {e.doc_id for e in search.index.entries()}
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"this is not an image")
    s3.put_object(Bucket=bucket, Key="broken.jpg", Body=seed_paths[2].read_bytes()[:2000])
    totals = stack["drain"]()
    assert totals["failed"] == 0  # parked in the dead-letter queue at once, not retried
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
