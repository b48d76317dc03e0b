"""Configuration chooses where we read; data never does (issue 14): the storage allowlist, folder storage off in
Lambda, content only from regular files within the byte limit, keys S3 would refuse, events that are malformed
or too big, operator errors retried rather than dead-lettered, secrets out of reprs, caps on what a search may
ask of the index whatever the entry point."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from imgsearch import service
from imgsearch.config import Settings
from imgsearch.errors import (ConfigError, ImageTooLargeError, IncompatibleIndexError, InvalidRequestError,
                              NotFoundError, PermanentError, StorageNotAllowedError, WeightsError)
from imgsearch.events import MAX_RECORDS, UnrecognisedEventError, parse_notification
from imgsearch.index.base import SearchRequest
from imgsearch.local import load_function
from imgsearch.options import MAX_PREFIX_LENGTH, MAX_QUERY_VECTORS, MAX_RESULT_WINDOW, SearchOptions
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import MAX_KEY_BYTES, FolderStorage
from imgsearch.storages import Storages

from helpers import ColourEmbedder, png
from test_extract_handler import s3_body, sqs_event


# -- the allowlist ---------------------------------------------------------------------------------------------
def test_only_allowed_buckets_and_folders_become_storages(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    settings = Settings.from_env({"IMGSEARCH_ALLOWED_BUCKETS": f"images, s3://other ,{photos}/"},
                                 data_dir=tmp_path / "data")
    storages = Storages(settings)
    assert storages.get(str(photos)).bucket == str(photos.resolve())
    assert storages.get("images").bucket == "images" and storages.get("other").bucket == "other"
    for bucket in ("/proc", "/etc", str(tmp_path), "secrets", str(photos / ".." / "photos" / "..")):
        with pytest.raises(StorageNotAllowedError):
            storages.get(bucket)
    with pytest.raises(StorageNotAllowedError):
        storages.url("/proc", "self/environ")


def test_the_default_allowlist_is_the_configured_bucket(tmp_path):
    assert Storages(Settings.from_env({}, bucket="images")).allows("images")
    assert not Storages(Settings.from_env({}, bucket="images")).allows("/proc")
    assert not Storages(Settings.from_env({})).allows("images")  # nothing configured: nothing served


def test_a_bucket_or_folder_named_by_the_operator_is_allowed_for_that_run(tmp_path):
    storages = Storages(Settings.from_env({}))
    storage, prefix = storages.open_source(str(tmp_path))
    assert storages.get(str(tmp_path)) is storage and prefix == ""
    storages.open_source("s3://operator-bucket/photos/")
    assert storages.allows("operator-bucket")


def test_bad_allowlist_entries_are_configuration_errors():
    for bad in ("relative/folder", "bad bucket name", "a/b"):
        with pytest.raises(ConfigError):
            Settings.from_env({"IMGSEARCH_ALLOWED_BUCKETS": bad})


def test_folders_are_never_storages_in_lambda(tmp_path):
    settings = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "extract", "IMGSEARCH_ALLOWED_BUCKETS": str(tmp_path)})
    assert settings.in_lambda
    with pytest.raises(StorageNotAllowedError, match="Lambda"):
        Storages(settings).get(str(tmp_path))


def test_an_event_cannot_open_a_folder_on_the_ingest_host(tmp_path):
    """The extract handler with no folder allowed: an event naming /etc is parked with its reason."""
    (tmp_path / "secret.png").write_bytes(png((1, 2, 3)))
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data", bucket="images"),
                              embedder=ColourEmbedder())
    module = load_function("extract")
    service.use(search)
    try:
        result = module.handler(json.loads(s3_body(str(tmp_path), "secret.png")), None)
        assert result["applied"] == [] and "IMGSEARCH_ALLOWED_BUCKETS" in result["rejected"][0]["reason"]
        assert module.handler(sqs_event(s3_body("/proc", "self/environ")), None) == {
            "batchItemFailures": [{"itemIdentifier": "m0"}]}  # no DLQ configured: the redrive policy parks it
        assert search.index.count() == 0
    finally:
        service.reset()


# -- what a folder serves ----------------------------------------------------------------------------------------
def test_a_folder_reads_only_regular_files_within_the_limit(tmp_path):
    folder = FolderStorage(tmp_path / "root")
    folder.root.mkdir()
    folder.put("ok.png", png((1, 1, 1)))
    assert folder.read("ok.png", max_bytes=10_000) == (folder.root / "ok.png").read_bytes()
    os.mkfifo(folder.root / "pipe.png")
    (tmp_path / "outside.png").write_bytes(png((2, 2, 2)))
    (folder.root / "link.png").symlink_to(tmp_path / "outside.png")
    for key in ("pipe.png", "link.png"):
        assert folder.head(key) is None
        with pytest.raises(NotFoundError):
            folder.read(key, max_bytes=10_000)
    with pytest.raises(ImageTooLargeError):
        folder.read("ok.png", max_bytes=10)


def test_a_file_that_lies_about_its_size_is_not_served():
    """/proc files say they are 0 bytes long and are not: the byte limit must hold anyway."""
    proc = FolderStorage("/proc")
    with pytest.raises((NotFoundError, PermanentError)):
        proc.read("self/environ", max_bytes=10)
    with pytest.raises((NotFoundError, PermanentError)):
        proc.read("self/environ", max_bytes=1_000_000)


@pytest.mark.parametrize("key", ["a\x00b.png", "x" * 1025, "é" * 513, "a/" + "x" * 300 + ".png"])
def test_keys_s3_would_refuse_are_refused_cleanly(tmp_path, key):
    folder = FolderStorage(tmp_path)
    if len(key.encode()) > 1024 or "\x00" in key:
        with pytest.raises(InvalidRequestError):
            folder.head(key)
        with pytest.raises(InvalidRequestError):
            folder.read(key, max_bytes=10)
    else:  # a legal key whose file name is too long for this file system: simply absent
        assert folder.head(key) is None
        with pytest.raises(NotFoundError):
            folder.read(key, max_bytes=10)


def test_a_bucket_with_a_nul_is_a_bad_request():
    with pytest.raises(InvalidRequestError):
        Storages(Settings.from_env({})).get("/tmp\x00/x")


# -- events ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [
    {"Records": ["not a record"]},
    {"Records": [{"eventSource": "aws:sns"}]},
    {"Records": [{"eventSource": "aws:sns", "Sns": None}]},
    {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": {"key": 5}}}]},
    {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": ["b"]}, "object": {"key": "k"}}}]},
    {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": "k"}}]},
    {"source": "aws.s3", "detail": "nope"},
    {"source": "aws.s3", "detail": {"bucket": {"name": "b"}, "object": {"key": None}}},
    {"Type": "Notification", "Message": 7},
])
def test_malformed_events_are_permanent_with_a_reason(payload):
    with pytest.raises(UnrecognisedEventError) as raised:
        parse_notification(payload)
    assert str(raised.value)


def test_deeply_nested_envelopes_are_permanent_not_a_crash():
    payload = {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]}
    for _ in range(10):  # escaping doubles the text at each level: a few levels make the point
        payload = {"Type": "Notification", "Message": json.dumps(payload)}
    with pytest.raises(UnrecognisedEventError):
        parse_notification(payload)


def test_a_message_with_too_many_records_is_permanent_naming_the_cap():
    record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}}}
    assert len(parse_notification({"Records": [record] * MAX_RECORDS})) == MAX_RECORDS
    with pytest.raises(UnrecognisedEventError, match=str(MAX_RECORDS)):
        parse_notification({"Records": [record] * (MAX_RECORDS + 1)})


# -- who can fix it ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [ConfigError("IMGSEARCH_BACKEND must be ..."), WeightsError("no weights"),
                                   IncompatibleIndexError("index holds another model's vectors")])
def test_an_operators_mistake_is_retried_never_dead_lettered(tmp_path, monkeypatch, error):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    folder.put("a.png", png((1, 2, 3)))
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data",
                                                dead_letter_queue_url="http://dlq.invalid/q"),
                              embedder=ColourEmbedder())
    search.storages.add(folder)

    def broken(change):
        raise error

    monkeypatch.setattr(search.ingester, "apply_change", broken)
    module = load_function("extract")
    parked = []
    monkeypatch.setattr(module, "_sqs", lambda: type("SQS", (), {"send_message": lambda self, **kw: parked.append(kw)})())
    service.use(search)
    try:
        assert module.handler(sqs_event(s3_body(folder.bucket, "a.png")), None) == {
            "batchItemFailures": [{"itemIdentifier": "m0"}]}
        assert parked == []
        with pytest.raises(type(error)):  # a direct invocation raises, so that Lambda retries it
            module.handler(json.loads(s3_body(folder.bucket, "a.png")), None)
    finally:
        service.reset()
    assert not isinstance(error, PermanentError)


# -- secrets -----------------------------------------------------------------------------------------------------
def test_settings_repr_hides_secrets():
    settings = Settings.from_env({"IMGSEARCH_ES_API_KEY": "es-key-123", "IMGSEARCH_ES_PASSWORD": "pw-456",
                                  "IMGSEARCH_API_KEY": "api-789", "IMGSEARCH_WEBHOOK_TOKEN": "hook-000"})
    assert settings.es_api_key == "es-key-123" and settings.webhook_token == "hook-000"
    for secret in ("es-key-123", "pw-456", "api-789", "hook-000"):
        assert secret not in repr(settings) and secret not in str(settings)


# -- caps in the core: whatever the entry point (API, CLI, a caller of the library) -------------------------------
def test_a_prefix_is_at_most_a_keys_length():
    assert MAX_PREFIX_LENGTH == MAX_KEY_BYTES  # characters: what the OpenAPI document's maxLength counts
    for long in ("x" * (MAX_PREFIX_LENGTH + 1), "é" * (MAX_PREFIX_LENGTH + 1)):
        with pytest.raises(InvalidRequestError, match="prefix"):
            SearchOptions(key_prefix=long)
        with pytest.raises(InvalidRequestError, match="prefix"):
            SearchRequest(vector=np.zeros(512), key_prefix=long)
    assert SearchOptions(key_prefix="x" * MAX_PREFIX_LENGTH).key_prefix
    assert SearchRequest(vector=np.zeros(512), key_prefix="é" * MAX_PREFIX_LENGTH).key_prefix


def test_a_search_carries_a_bounded_number_of_query_vectors():
    SearchRequest(vector=np.zeros((MAX_QUERY_VECTORS, 512), dtype=np.float32))
    for rows in (0, MAX_QUERY_VECTORS + 1):
        with pytest.raises(InvalidRequestError, match="query vectors"):
            SearchRequest(vector=np.zeros((rows, 512), dtype=np.float32))
    with pytest.raises(InvalidRequestError, match="query vectors"):
        SearchRequest(vector=np.zeros((2, 2, 512), dtype=np.float32))


def test_the_result_window_is_capped_for_options_and_requests_alike():
    for make in (SearchOptions, lambda **kw: SearchRequest(vector=np.zeros(512), **kw)):
        make(page=MAX_RESULT_WINDOW // 100, page_size=100)
        with pytest.raises(InvalidRequestError, match="page x page_size"):
            make(page=MAX_RESULT_WINDOW // 100 + 1, page_size=100)
