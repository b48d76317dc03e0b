"""POST /uploads over real HTTP: the ticket for an S3 bucket, and every refusal in the API's error shape.

boto3 signs the form without calling S3, so an S3 bucket here needs no server; tests/e2e/test_page_upload.py
sends the form to a real one."""

from __future__ import annotations

import dataclasses
import re

import pytest
import requests

from helpers import error_of
from imgsearch import service

TIMEOUT = 120


def ask(api: str, body=None, **kwargs) -> requests.Response:
    return requests.post(api + "/uploads", json=body, timeout=TIMEOUT, **kwargs)


@pytest.fixture
def s3_bucket(variant, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return variant(bucket="uploads-test", s3_endpoint_url="http://127.0.0.1:9")


def test_an_s3_bucket_gets_a_form_for_one_image(api, s3_bucket):
    response = ask(api, {"content_type": "image/jpeg", "filename": "../../holiday.jpg"})
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert ticket["bucket"] == "uploads-test" and ticket["url"] == "http://127.0.0.1:9/uploads-test"
    assert re.fullmatch(r"uploads/[0-9a-f]{32}\.jpg", ticket["key"])  # never the file name
    assert ticket["fields"]["key"] == ticket["key"] and ticket["fields"]["Content-Type"] == "image/jpeg"
    assert (ticket["max_bytes"], ticket["expires_in"]) == (s3_bucket.settings.max_image_bytes, 300)
    assert ticket["filename"] == "../../holiday.jpg"  # handed back for display only
    assert ask(api, {"content_type": "image/png"}).json()["filename"] is None


@pytest.mark.parametrize("body, named", [
    ({"content_type": "image/svg+xml"}, "content_type must be one of"),
    ({"content_type": "text/plain"}, "content_type must be one of"),
    ({}, "'content_type' is required"),
    ({"content_type": 7}, "'content_type' is required"),
    ({"content_type": "image/jpeg", "filename": 3}, "'filename' must be a string"),
    ({"content_type": "image/jpeg", "filename": "x" * 256}, "filename may be at most 255"),
    ({"content_type": "image/jpeg", "key": "mine.jpg"}, "unknown field(s) 'key'"),
    ({"content_type": "image/jpeg", "bucket": "other"}, "unknown field(s) 'bucket'"),
    ([1], "must be an object"),
])
def test_bad_requests_are_400(api, s3_bucket, body, named):
    assert named in error_of(ask(api, body), 400, "bad_request")


def test_a_body_that_is_not_json_is_400_and_another_content_type_415(api, s3_bucket):
    response = requests.post(api + "/uploads", data=b"{nope", headers={"Content-Type": "application/json"},
                             timeout=TIMEOUT)
    assert "JSON" in error_of(response, 400, "bad_request")
    response = requests.post(api + "/uploads", data=b"x", headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT)
    error_of(response, 415, "unsupported_media_type")


def test_a_folder_bucket_cannot_take_uploads_and_says_so_without_its_path(api, seed_dir):
    message = error_of(ask(api, {"content_type": "image/jpeg"}), 409, "uploads_unavailable")
    assert "S3 bucket" in message and "local folder" in message and str(seed_dir) not in message


def test_no_bucket_cannot_take_uploads(api, seed_service):
    from imgsearch.pipeline import ImageSearch

    settings = dataclasses.replace(seed_service.settings, bucket=None)
    service.use(ImageSearch(settings, embedder=seed_service.embedder, index=seed_service.index))
    assert "IMGSEARCH_BUCKET" in error_of(ask(api, {"content_type": "image/jpeg"}), 409, "uploads_unavailable")


def test_uploads_need_the_api_key(api, variant, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    variant(api_key="s3cret-key", bucket="uploads-test", s3_endpoint_url="http://127.0.0.1:9")
    error_of(ask(api, {"content_type": "image/jpeg"}), 401, "missing_api_key")
    error_of(ask(api, {"content_type": "image/jpeg"}, headers={"x-api-key": "nope"}), 403, "wrong_api_key")
    assert ask(api, {"content_type": "image/jpeg"}, headers={"x-api-key": "s3cret-key"}).status_code == 200
