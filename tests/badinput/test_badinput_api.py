"""The corpus through the search API over HTTP, served as `imgsearch serve` serves it (tests/api does the same):
every bad upload is a 4xx with a JSON message saying what is wrong, every good one a 200 that finds itself; odd
keys round-trip through the key routes; polyglots are served back only as their image type."""

from __future__ import annotations

import mimetypes
import re
import threading

import pytest
import requests

from badinput import corpus
from helpers import INT8_MODEL
from imgsearch import service
from imgsearch.config import Settings

TIMEOUT = 120
REJECTED = [c for c in corpus.cases() if c.outcome == corpus.REJECTED]
INDEXED = [c for c in corpus.cases() if c.outcome == corpus.INDEXED]


@pytest.fixture(scope="module")
def corpus_service(tmp_path_factory, embedder, weights_path, corpus_dir):
    """An embedded index of the corpus folder (the folder is the default bucket): its good files and odd keys."""
    from imgsearch.pipeline import ImageSearch
    from imgsearch.storage import FolderStorage

    settings = Settings.from_env({}, data_dir=tmp_path_factory.mktemp("badinput-api"), weights=weights_path,
                                 int8_model=INT8_MODEL, bucket=str(corpus_dir))
    search = ImageSearch.open(settings, embedder=embedder)
    report = search.ingester.index_source(FolderStorage(corpus_dir))
    search.upkeep.after_ingest()
    yield search, report
    search.close()


@pytest.fixture(scope="module")
def api(corpus_service):
    """The base URL of the search app serving the corpus index."""
    from imgsearch.local import load_function, make_api_server

    search, _ = corpus_service
    module = load_function("search")
    server = make_api_server(module.app, "127.0.0.1", 0,
                             max_body_bytes=module.inputs.max_body_bytes(search.settings.max_image_bytes))
    thread = threading.Thread(target=server.server.serve_forever, name="badinput-api", daemon=True)
    thread.start()
    service.use(search)
    yield f"http://127.0.0.1:{server.server.server_address[1]}"
    service.reset()
    server.shutdown()
    server.server.server_close()
    thread.join(timeout=10)


def upload(api: str, case: corpus.Case, *, raw: bool = False) -> requests.Response:
    """As a browser sends it: multipart, with the file's name and the type its extension suggests (which may
    lie); or the raw bytes as application/octet-stream."""
    if raw:
        return requests.post(f"{api}/search", data=case.data, headers={"Content-Type": "application/octet-stream"},
                             timeout=TIMEOUT)
    guessed = mimetypes.guess_type(case.key)[0] or "application/octet-stream"
    return requests.post(f"{api}/search", files={"file": (case.key, case.data, guessed)}, timeout=TIMEOUT)


def error_message(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"message", "code"} and body["message"] and body["code"], body
    return body["message"]


@pytest.mark.parametrize("raw", [False, True], ids=["multipart", "raw"])
@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.name)
def test_a_bad_upload_is_a_4xx_saying_what_is_wrong(api, case, raw):
    message = error_message(upload(api, case, raw=raw), case.status)
    assert re.search(case.reason, message), message


@pytest.mark.parametrize("case", INDEXED, ids=lambda c: c.name)
def test_a_good_upload_finds_itself_first(api, case):
    response = upload(api, case)
    assert response.status_code == 200, response.text[:500]
    top = response.json()["hits"][0]
    assert top["key"] == case.key and top["score"] > 0.99, response.json()["hits"][:3]
    assert (top["content_type"], (top["width"], top["height"])) == (case.content_type, case.size)


def test_the_index_holds_the_good_files_and_reports_the_bad_ones(corpus_service):
    search, report = corpus_service
    keys = {e.key for e in search.index.entries()}
    assert {c.key for c in INDEXED} <= keys
    assert not keys & {c.key for c in REJECTED}
    failed = dict(report.failed)
    for case in REJECTED:
        assert re.search(case.reason, failed[case.key]), (case.name, failed.get(case.key))


@pytest.mark.parametrize("case", [k for k in corpus.key_cases() if k.outcome == corpus.INDEXED],
                         ids=lambda k: k.name)
def test_an_odd_key_round_trips_through_the_key_routes(api, case):
    info = requests.get(f"{api}/image", params={"key": case.key}, timeout=TIMEOUT)
    assert info.status_code == 200, info.text[:500]
    assert info.json()["key"] == case.key
    similar = requests.get(f"{api}/similar", params={"key": case.key, "page_size": 3}, timeout=TIMEOUT)
    assert similar.status_code == 200 and case.key not in [h["key"] for h in similar.json()["hits"]]
    content = requests.get(f"{api}/image/content", params={"key": case.key}, timeout=TIMEOUT)
    assert content.status_code == 200 and content.content == corpus.key_image(case)


@pytest.mark.parametrize("case", [k for k in corpus.key_cases() if k.outcome == corpus.REJECTED],
                         ids=lambda k: k.name)
def test_a_key_no_image_can_have_is_a_404_saying_so(api, case):
    """The OpenAPI document's rule: a key over 1024 bytes of UTF-8 or holding NUL is no image's (404), even
    when a file of that name (the 1025-byte one) sits in the folder."""
    for route in ("/image", "/image/content", "/similar"):
        message = error_message(requests.get(f"{api}{route}", params={"key": case.key}, timeout=TIMEOUT), 404)
        assert re.search(case.reason, message), message


@pytest.mark.parametrize("case", [c for c in INDEXED if "polyglot" in c.name], ids=lambda c: c.name)
def test_a_polyglot_is_served_back_only_as_its_image_type(api, case):
    response = requests.get(f"{api}/image/content", params={"key": case.key}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == case.data  # the bytes as stored
    assert response.headers["Content-Type"] == case.content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # never sniffed into HTML or script
