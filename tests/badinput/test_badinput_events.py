"""The corpus through bucket events: uploads into moto's S3 notify its SQS queue, the extract handler (fed by the
local worker, as Lambda's trigger would) indexes the good files and parks every bad one in the dead-letter queue
at once, with its reason; nothing is retried, and what was indexed before is still there and searchable."""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import quote_plus

import pytest

from badinput import corpus
from helpers import INT8_MODEL, make_bucket_with_queue
from imgsearch import service
from imgsearch.config import Settings
from imgsearch.index import doc_id
from imgsearch.local import load_function, run_worker
from imgsearch.options import SearchOptions
from servers import MotoServer

BEFORE = "before/kept.jpg"  # indexed before the corpus arrives
FILES = {f"corpus/{c.key}": c for c in corpus.cases()}
GOOD_KEYS = [k for k in corpus.key_cases() if k.outcome == corpus.INDEXED]
BAD_KEYS = [k for k in corpus.key_cases() if k.outcome == corpus.REJECTED]
SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")  # what SQS accepts in attributes


def forged_event(bucket: str, key: str) -> str:
    """An S3 notification naming a key no S3 object can have (S3 refuses such keys; a forged or corrupted
    message can still carry one), key encoded the way S3 encodes keys."""
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
              "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 1}}}
    return json.dumps({"Records": [record]})


@pytest.fixture(scope="module")
def run(tmp_path_factory, embedder, weights_path, seed_paths):
    """One run of the whole story against a fresh bucket: a photo is indexed, then the corpus is uploaded (and
    two forged events sent), then the queue is drained. Returns what the tests look at."""
    server = MotoServer().start()
    env = pytest.MonkeyPatch()
    for name, value in {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        env.setenv(name, value)  # boto3, ours and the handler's
    bucket = f"corpus-{uuid.uuid4().hex[:8]}"
    aws = make_bucket_with_queue(server.url, bucket, tag_changes=False)  # one event per upload: they are counted
    settings = Settings.from_env({}, data_dir=tmp_path_factory.mktemp("badinput-events"), weights=weights_path,
                                 int8_model=INT8_MODEL, bucket=bucket, dead_letter_queue_url=aws["dlq"],
                                 s3_endpoint_url=server.url)
    from imgsearch.pipeline import ImageSearch

    search = ImageSearch.open(settings, embedder=embedder)
    extract = load_function("extract")
    service.use(search)
    extract._sqs.cache_clear()  # its dead-letter client must see this endpoint

    def drain() -> dict:
        totals = run_worker(aws["queue"], extract.handler, sqs=aws["sqs"], wait_seconds=1, idle_exit=1.5)
        search.index.refresh()
        return totals

    try:
        s3 = aws["s3"]
        s3.put_object(Bucket=bucket, Key=BEFORE, Body=seed_paths[0].read_bytes(), ContentType="image/jpeg")
        first = drain()
        before = {e.doc_id: e for e in search.index.entries()}
        for key, case in FILES.items():
            s3.put_object(Bucket=bucket, Key=key, Body=case.data)
        for case in GOOD_KEYS:
            s3.put_object(Bucket=bucket, Key=case.key, Body=corpus.key_image(case))
        for case in BAD_KEYS:
            aws["sqs"].send_message(QueueUrl=aws["queue"], MessageBody=forged_event(bucket, case.key))
        second = drain()
        letters = []
        while batch := aws["sqs"].receive_message(QueueUrl=aws["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                  MessageAttributeNames=["All"]).get("Messages", []):
            letters += [{name: a["StringValue"] for name, a in m.get("MessageAttributes", {}).items()}
                        for m in batch]
        yield {"bucket": bucket, "search": search, "first": first, "second": second, "before": before,
               "letters": letters, "entries": {e.key: e for e in search.index.entries()}}
    finally:
        service.reset()
        search.close()
        extract._sqs.cache_clear()
        env.undo()
        server.stop()


def test_every_message_was_settled_at_once_none_retried(run):
    assert run["first"]["failed"] == 0 and run["first"]["succeeded"] >= 1
    assert run["second"]["failed"] == 0  # a failed record would be retried: a permanent error must never be
    assert run["second"]["succeeded"] == len(FILES) + len(GOOD_KEYS) + len(BAD_KEYS)


def test_what_was_indexed_before_is_still_there_and_found(run, seed_paths):
    search, (kept,) = run["search"], run["before"].values()
    assert kept.key == BEFORE and search.index.get(kept.doc_id) is not None
    hits = search.searcher.search_image(seed_paths[0].read_bytes(), SearchOptions(page_size=3)).hits
    assert hits[0].key == BEFORE and hits[0].score > 0.99


@pytest.mark.parametrize("key", [k for k, c in FILES.items() if c.outcome == corpus.REJECTED])
def test_a_bad_file_is_dead_lettered_with_its_reason(run, key):
    case = FILES[key]
    letters = [letter for letter in run["letters"] if letter.get("key") == key]
    assert len(letters) == 1, [letter.get("key") for letter in run["letters"]]
    assert letters[0]["bucket"] == run["bucket"] and letters[0]["error"] == case.error
    assert re.search(case.reason, letters[0]["reason"]), letters[0]["reason"]
    assert key not in run["entries"]


@pytest.mark.parametrize("key", [k for k, c in FILES.items() if c.outcome == corpus.INDEXED])
def test_a_good_file_is_indexed_as_its_bytes_say(run, key):
    case, entry = FILES[key], run["entries"].get(key)
    assert entry is not None, f"{key} was not indexed"
    document = run["search"].index.get(entry.doc_id, with_vector=False)
    assert (document.content_type, (document.width, document.height)) == (case.content_type, case.size)


@pytest.mark.parametrize("case", GOOD_KEYS, ids=lambda k: k.name)
def test_an_odd_key_is_indexed_under_exactly_that_key(run, case):
    assert case.key in run["entries"]
    assert run["search"].index.get(doc_id(run["bucket"], case.key)) is not None


@pytest.mark.parametrize("case", BAD_KEYS, ids=lambda k: k.name)
def test_a_key_no_object_can_have_is_dead_lettered_with_sqs_safe_attributes(run, case):
    """The letter must reach the queue: SQS refuses a NUL in an attribute, so the key is written escaped."""
    escaped = case.key.replace("\x00", "\\x00")
    letters = [letter for letter in run["letters"] if letter.get("key") == escaped]
    assert len(letters) == 1 and letters[0]["error"] == "InvalidRequestError", run["letters"]
    assert re.search(case.reason, letters[0]["reason"])


def test_every_dead_letter_has_only_characters_sqs_accepts(run):
    assert len(run["letters"]) == sum(c.outcome == corpus.REJECTED for c in FILES.values()) + len(BAD_KEYS)
    for letter in run["letters"]:
        assert all(SQS_TEXT.fullmatch(value) for value in letter.values()), letter


def test_the_index_holds_exactly_the_good_files_the_odd_keys_and_what_was_there(run):
    expected = {BEFORE} | {k for k, c in FILES.items() if c.outcome == corpus.INDEXED} | {k.key for k in GOOD_KEYS}
    assert set(run["entries"]) == expected
