"""Uploads from the page (imgsearch.uploads): the presigned POST's policy, the key the server chooses, the
refusals. boto3 signs the form locally, so no server is needed here; tests/e2e/test_page_upload.py has a real
S3 server enforce the policy."""

from __future__ import annotations

import base64
import json
import re

import pytest

from imgsearch.config import Settings
from imgsearch.errors import ConfigError, InvalidRequestError, UploadsUnavailableError
from imgsearch.images import CONTENT_TYPES
from imgsearch.storages import Storages
from imgsearch.uploads import ACCEPTED_TYPES, UPLOAD_TYPES, new_upload


@pytest.fixture
def s3_settings(monkeypatch, tmp_path) -> Settings:
    # GIVEN an S3 bucket (boto3 signs without calling the endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return Settings.from_env({}, data_dir=tmp_path, bucket="images-test", s3_endpoint_url="http://127.0.0.1:9",
                             max_image_bytes=123456)


def policy_of(ticket) -> dict:
    return json.loads(base64.b64decode(ticket.fields["policy"]))


def test_the_policy_allows_exactly_this_bucket_key_type_and_size(s3_settings):
    ticket = new_upload(s3_settings, Storages(s3_settings), "image/png", filename="cat.png")
    conditions = policy_of(ticket)["conditions"]
    assert {"bucket": "images-test"} in conditions
    assert {"key": ticket.key} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, 123456] in conditions
    assert ticket.fields["key"] == ticket.key and ticket.fields["Content-Type"] == "image/png"
    assert ticket.url == "http://127.0.0.1:9/images-test"
    assert (ticket.bucket, ticket.max_bytes, ticket.expires_in, ticket.filename) == ("images-test", 123456, 300,
                                                                                      "cat.png")
    assert set(ticket.to_dict()) == {"url", "fields", "bucket", "key", "max_bytes", "expires_in", "filename"}


def test_the_form_expires_after_the_configured_time(s3_settings):
    from datetime import datetime, timezone

    ticket = new_upload(s3_settings.replace(upload_expires=60), Storages(s3_settings), "image/jpeg")
    expires = datetime.strptime(policy_of(ticket)["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert 50 <= (expires - datetime.now(timezone.utc)).total_seconds() <= 61
    assert ticket.expires_in == 60


def test_the_key_is_chosen_by_the_server_never_from_the_file_name(s3_settings):
    names = ["../../etc/passwd", "other-bucket/x.jpg", "seed/2007_001439.jpg", "é 1.png"]
    keys = {new_upload(s3_settings, Storages(s3_settings), "image/jpeg", filename=name).key for name in names}
    assert len(keys) == len(names)  # a random id each time
    assert all(re.fullmatch(r"uploads/[0-9a-f]{32}\.jpg", key) for key in keys), keys
    custom = s3_settings.replace(upload_prefix="incoming/page-")
    assert re.fullmatch(r"incoming/page-[0-9a-f]{32}\.webp", new_upload(custom, Storages(custom), "image/webp").key)


def test_every_type_the_decoder_reads_is_accepted_with_its_extension(s3_settings):
    assert set(UPLOAD_TYPES) == set(CONTENT_TYPES.values())
    for content_type in ACCEPTED_TYPES:
        ticket = new_upload(s3_settings, Storages(s3_settings), content_type)
        assert ticket.key.endswith(UPLOAD_TYPES[ticket.fields["Content-Type"]])
    assert new_upload(s3_settings, Storages(s3_settings), "image/jpg").fields["Content-Type"] == "image/jpeg"


@pytest.mark.parametrize("content_type", ["image/svg+xml", "text/html", "application/octet-stream", "", "IMAGE/PNG",
                                          "image/jpeg; charset=x"])
def test_other_types_are_refused(s3_settings, content_type):
    with pytest.raises(InvalidRequestError, match="content_type must be one of"):
        new_upload(s3_settings, Storages(s3_settings), content_type)


def test_a_file_name_too_long_to_display_is_refused(s3_settings):
    with pytest.raises(InvalidRequestError, match="filename"):
        new_upload(s3_settings, Storages(s3_settings), "image/jpeg", filename="x" * 256)


def test_uploads_need_an_s3_bucket(tmp_path, s3_settings):
    none = Settings.from_env({}, data_dir=tmp_path)
    with pytest.raises(UploadsUnavailableError, match="IMGSEARCH_BUCKET"):
        new_upload(none, Storages(none), "image/jpeg")
    folder = Settings.from_env({}, data_dir=tmp_path, bucket=str(tmp_path))
    with pytest.raises(UploadsUnavailableError, match="local folder") as refused:
        new_upload(folder, Storages(folder), "image/jpeg")
    assert str(tmp_path) not in str(refused.value)  # no server path in what the client reads


def test_the_upload_settings_are_read_and_checked():
    settings = Settings.from_env({"IMGSEARCH_UPLOAD_PREFIX": "in/", "IMGSEARCH_UPLOAD_EXPIRES": "120"})
    assert (settings.upload_prefix, settings.upload_expires) == ("in/", 120)
    assert (Settings().upload_prefix, Settings().upload_expires) == ("uploads/", 300)
    with pytest.raises(ConfigError, match="IMGSEARCH_UPLOAD_EXPIRES"):
        Settings.from_env({"IMGSEARCH_UPLOAD_EXPIRES": "0"})
    with pytest.raises(ConfigError, match="IMGSEARCH_UPLOAD_PREFIX"):
        Settings.from_env({"IMGSEARCH_UPLOAD_PREFIX": "x" * 901})
