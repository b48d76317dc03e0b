"""End to end on the real local stack (infra/local/up): LocalStack or MinIO, the ingest path for it,
Elasticsearch and the search API, all separate processes, all over HTTP. A user's path, not a test double."""

from __future__ import annotations

import time

import boto3
import pytest
import requests

from helpers import reencoded_copy
from servers import local_stack

ODD_KEY = "holiday photos/été 2024/beach + sun #1.jpg"


@pytest.fixture(scope="module", params=["localstack", "minio"])
def stack(request, tmp_path_factory, weights_path):
    with local_stack(request.param, tmp_path_factory.mktemp(f"local-{request.param}"), weights_path) as values:
        yield values


def api(stack, path, **kwargs):
    method = kwargs.pop("method", "GET")
    return requests.request(method, stack["IMGSEARCH_API_URL"] + path, timeout=60, **kwargs)


def wait_until(condition, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def search(stack, data: bytes, **params) -> dict:
    response = api(stack, "/search", method="POST", files={"file": ("q.jpg", data, "image/jpeg")}, data=params)
    assert response.status_code == 200, response.text
    return response.json()


def count(stack) -> int:
    return api(stack, "/stats").json()["documents"]


def test_the_whole_scenario(stack, seed_paths):
    s3, bucket = stack["s3"], stack["IMGSEARCH_BUCKET"]
    for path in seed_paths:
        s3.put_object(Bucket=bucket, Key=f"seed/{path.name}", Body=path.read_bytes(), ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key=ODD_KEY, Body=seed_paths[3].read_bytes())
    wait_until(lambda: count(stack) == len(seed_paths) + 1, what="every upload to become searchable")

    # A re-encoded copy finds its original first, and the presigned URL serves exactly the uploaded bytes.
    for path in seed_paths:
        hits = search(stack, reencoded_copy(path), prefix="seed/")["hits"]
        assert hits[0]["key"] == f"seed/{path.name}" and hits[0]["score"] > hits[1]["score"]
    top = search(stack, reencoded_copy(seed_paths[0]), prefix="seed/")["hits"][0]
    assert requests.get(top["url"], timeout=10).content == seed_paths[0].read_bytes()

    # The odd key round-trips through the event and back out of the API.
    odd = search(stack, seed_paths[3].read_bytes(), page_size=3)["hits"]
    assert ODD_KEY in [h["key"] for h in odd]

    # A re-upload leaves one document; a delete removes its document.
    s3.put_object(Bucket=bucket, Key=f"seed/{seed_paths[1].name}", Body=seed_paths[1].read_bytes())
    s3.delete_object(Bucket=bucket, Key=ODD_KEY)
    wait_until(lambda: count(stack) == len(seed_paths), what="the delete to reach the index")
    hits = search(stack, seed_paths[1].read_bytes(), page_size=10)["hits"]
    assert [h["key"] for h in hits].count(f"seed/{seed_paths[1].name}") == 1

    # A non-image ends with its reason recorded, and every other document is intact.
    s3.put_object(Bucket=bucket, Key="notes/readme.txt", Body=b"not an image at all")
    wait_until(lambda: any("readme.txt" in r.get("key", "") for r in rejections(stack)), timeout=60,
               what="the non-image's rejection to be recorded")
    assert any("not an image" in r["reason"] for r in rejections(stack))
    assert count(stack) == len(seed_paths)


def test_a_tag_change_relabels_without_embedding_again(stack, seed_paths):
    """Tags and x-amz-meta-* given at upload are indexed; a tag change reaches the document, not the model
    (LocalStack sends s3:ObjectTagging:Put/Delete, MinIO s3:ObjectCreated:PutTagging/DeleteTagging)."""
    s3, bucket, key = stack["s3"], stack["IMGSEARCH_BUCKET"], "labelled/cover.jpg"
    s3.put_object(Bucket=bucket, Key=key, Body=seed_paths[2].read_bytes(), ContentType="image/jpeg",
                  Tagging="color=red&shelf=top", Metadata={"Author": "ann"})
    wait_until(lambda: image(stack, key) is not None, what="the labelled upload to become searchable")
    first = image(stack, key)
    assert (first["folder"], first["tags"], first["user_metadata"]) == (
        "labelled/", {"color": "red", "shelf": "top"}, {"author": "ann"})

    # Elasticsearch searches see a write after its next refresh (about a second), GET /image at once: the waits
    # are on what a user searches with, the filter.
    s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "color", "Value": "blue"}]})
    query = reencoded_copy(seed_paths[2])
    wait_until(lambda: [h["key"] for h in search(stack, query, filter="tag.color=blue")["hits"]] == [key],
               timeout=60, what="the new tags to filter the search")
    assert image(stack, key)["tags"] == {"color": "blue"}
    assert image(stack, key)["indexed_at"] == first["indexed_at"]  # relabelled, not embedded again
    assert search(stack, query, filter="tag.color=red")["total"] == 0

    s3.delete_object_tagging(Bucket=bucket, Key=key)
    wait_until(lambda: search(stack, query, filter="tag.color=blue")["total"] == 0, timeout=60,
               what="the deleted tags to leave the search")
    assert image(stack, key)["tags"] == {}
    assert image(stack, key)["user_metadata"] == {"author": "ann"}


def image(stack, key: str) -> dict | None:
    """GET /image: the indexed document's metadata, or None while it is not indexed."""
    response = api(stack, "/image", params={"key": key})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def rejections(stack) -> list[dict]:
    """LocalStack: the dead-letter queue (with the reason as an attribute); MinIO: the webhook's failure log."""
    if stack["store"] == "minio":
        return requests.get(stack["IMGSEARCH_WEBHOOK_URL"] + "/failures", timeout=10,
                            headers={"Authorization": f"Bearer {stack['IMGSEARCH_WEBHOOK_TOKEN']}"}).json()["failures"]
    sqs = boto3.client("sqs", endpoint_url=stack["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                       aws_secret_access_key="test", region_name="us-east-1")
    messages = sqs.receive_message(QueueUrl=stack["IMGSEARCH_DEAD_LETTER_QUEUE_URL"], MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"], VisibilityTimeout=0).get("Messages", [])
    return [{k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()} for m in messages]
