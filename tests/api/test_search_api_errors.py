"""Every error the search API answers: JSON {"message", "code"} with the status from one table."""

from __future__ import annotations

import base64
import dataclasses
import json
import types
from urllib.parse import quote

import pytest
import requests

from helpers import error_of, reencoded_copy
from imgsearch import service
from imgsearch.errors import BackendUnavailableError
from imgsearch.index.base import IndexBackend

TIMEOUT = 120


def upload(api: str, data: bytes, *, path: str = "/search", params=None, filename="query.jpg",
           content_type="image/jpeg", **kwargs):
    return requests.post(api + path, params=params, files={"file": (filename, data, content_type)},
                         timeout=TIMEOUT, **kwargs)


class DownIndex(IndexBackend):
    """An index whose server does not answer."""

    name = "down"

    def _down(self, *args, **kwargs):
        raise BackendUnavailableError("index server unreachable (test)")

    ensure_index = delete_index = upsert = delete = get = count = search = entries = _down
    descriptor_sets = set_vectors = set_labels = copies = _down

    @property
    def whitenings(self):  # its whitening store is as unreachable as the rest
        return types.SimpleNamespace(info=self._down, load=self._down, save=self._down)

    def health(self) -> dict:
        return {"ok": False, "backend": self.name, "error": "index server unreachable (test)"}


class BrokenIndex(DownIndex):
    """An index with a bug: raises something no table row covers."""

    def _down(self, *args, **kwargs):
        raise RuntimeError("secret internal detail")

    ensure_index = delete_index = upsert = delete = get = count = search = entries = _down
    descriptor_sets = set_vectors = set_labels = copies = _down


@pytest.fixture(scope="module")
def query(seed_paths) -> bytes:
    return reencoded_copy(seed_paths[0])


# -- 400 -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, named", [
    ({"page": "0"}, "page"), ({"page": "two"}, "page"), ({"page": "1.5"}, "page"),
    ({"page_size": "101"}, "page_size"), ({"page_size": "0"}, "page_size"),
    ({"min_score": "2"}, "min_score"), ({"min_score": "-1.5"}, "min_score"), ({"min_score": "nan"}, "min_score"),
    ({"min_score": "high"}, "min_score"), ({"mode": "bogus"}, "mode"), ({"rerank": "maybe"}, "rerank"),
    ({"page": "101", "page_size": "10"}, "page"), ({"prefix": "x" * 1025}, "prefix"),
    ({"mode": ""}, "mode"), ({"page": ""}, "page"), ({"rerank": "1"}, "rerank"),  # only documented values
])
def test_bad_parameters_are_400_naming_the_parameter(api, query, seed_paths, params, named):
    message = error_of(upload(api, query, params=params), 400, "bad_request")
    assert named in message
    similar = requests.get(f"{api}/images/{seed_paths[0].name}/similar", params=params, timeout=TIMEOUT)
    assert named in error_of(similar, 400, "bad_request")


def test_bad_parameters_in_a_json_body(api, query):
    body = {"image": base64.b64encode(query).decode(), "page_size": True}
    assert "page_size" in error_of(requests.post(api + "/search", json=body, timeout=TIMEOUT), 400, "bad_request")


@pytest.mark.parametrize("params, named", [({"score": "2"}, "score"), ({"pageSize": "0"}, "pageSize"),
                                           ({"page": "0"}, "page")])
def test_search_by_image_names_its_own_parameters(api, query, params, named):
    assert named in error_of(upload(api, query, path="/searchByImage", params=params), 400, "bad_request")


def test_requests_without_an_image_are_400(api, query):
    no_file = requests.post(api + "/search", files={"other": ("q.jpg", query, "image/jpeg")}, timeout=TIMEOUT)
    assert "'file'" in error_of(no_file, 400, "bad_request")
    only_fields = requests.post(api + "/search", files={"page": (None, "1")}, timeout=TIMEOUT)
    error_of(only_fields, 400, "bad_request")
    error_of(requests.post(api + "/search", json={"page": 1}, timeout=TIMEOUT), 400, "bad_request")
    error_of(requests.post(api + "/search", headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT),
             400, "bad_request")
    empty_file = upload(api, b"")
    assert "empty" in error_of(empty_file, 400, "bad_request")


@pytest.mark.parametrize("body, named", [
    (b'{"image": "not base64!!"}', "base64"), (b'{"image": 12}', "base64"), (b"[1, 2]", "object"),
    (b"{not json", "JSON"),
])
def test_malformed_json_is_400(api, body, named):
    response = requests.post(api + "/search", data=body, headers={"Content-Type": "application/json"},
                             timeout=TIMEOUT)
    assert named in error_of(response, 400, "bad_request")


def test_multipart_without_boundary_is_400(api, query):
    response = requests.post(api + "/search", data=query, headers={"Content-Type": "multipart/form-data"},
                             timeout=TIMEOUT)
    assert "boundary" in error_of(response, 400, "bad_request")


def test_no_bucket_anywhere_is_400(api, search_module, seed_service, seed_paths):
    from imgsearch.pipeline import ImageSearch

    settings = dataclasses.replace(seed_service.settings, bucket=None)
    service.use(ImageSearch(settings, embedder=seed_service.embedder, index=seed_service.index))
    response = requests.get(f"{api}/images/{seed_paths[0].name}", timeout=TIMEOUT)
    assert "bucket" in error_of(response, 400, "bad_request")
    assert "key" in error_of(requests.get(f"{api}/similar", timeout=TIMEOUT), 400, "bad_request")


# -- 404 -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/images/nope.jpg", "/images/nope.jpg/similar", "/images/nope.jpg/content",
                                  "/image?key=nope.jpg", "/similar?key=nope.jpg", "/image/content?key=nope.jpg"])
def test_unknown_key_is_404(api, path):
    assert "nope.jpg" in error_of(requests.get(api + path, timeout=TIMEOUT), 404, "not_found")


def test_known_key_in_another_bucket_is_404(api, seed_paths, tmp_path):
    response = requests.get(f"{api}/images/{seed_paths[0].name}", params={"bucket": str(tmp_path)}, timeout=TIMEOUT)
    error_of(response, 404, "not_found")


def test_content_serves_no_file_that_is_not_indexed(api, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    for params in ({"bucket": str(tmp_path), "key": "secret.txt"}, {"key": "../../../../etc/passwd"}):
        response = requests.get(f"{api}/image/content", params=params, timeout=TIMEOUT)
        error_of(response, 404, "not_found")
        assert b"do not serve" not in response.content


# -- 413 -----------------------------------------------------------------------------------------------------
def test_images_over_the_limit_are_413_in_every_encoding(api, variant, seed_paths):
    original = seed_paths[0].read_bytes()
    limit = len(original) // 2
    variant(max_image_bytes=limit)
    answers = [
        upload(api, original),
        requests.post(api + "/search", data=original, headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT),
        requests.post(api + "/search", json={"image": base64.b64encode(original).decode()}, timeout=TIMEOUT),
        upload(api, original, path="/searchByImage"),
    ]
    for response in answers:
        assert str(limit) in error_of(response, 413, "image_too_large")
    huge_json = json.dumps({"image": "A" * (limit * 10)})  # refused by its size, before it is parsed
    response = requests.post(api + "/search", data=huge_json, headers={"Content-Type": "application/json"},
                             timeout=TIMEOUT)
    assert "request body" in error_of(response, 413, "image_too_large")


def test_images_over_the_pixel_limit_are_413(api, variant, query):
    variant(max_pixels=10_000)
    assert "pixels" in error_of(upload(api, query), 413, "image_too_large")


# -- 415 -----------------------------------------------------------------------------------------------------
def test_bytes_that_are_no_image_are_415(api):
    raw = requests.post(api + "/search", data=b"just some text, no pixels", headers={"Content-Type": "image/jpeg"},
                        timeout=TIMEOUT)
    assert "not an image" in error_of(raw, 415, "bad_image")
    error_of(upload(api, b"%PDF-1.4 not an image", filename="doc.pdf", content_type="application/pdf"),
             415, "bad_image")


def test_truncated_jpeg_is_415(api, seed_paths):
    data = seed_paths[0].read_bytes()
    assert "truncated" in error_of(upload(api, data[: len(data) // 2]), 415, "bad_image")


def test_an_undeclared_content_type_is_415_in_our_shape(api):
    response = requests.post(api + "/search", data=b"hello", headers={"Content-Type": "text/plain"}, timeout=TIMEOUT)
    assert "text/plain" in error_of(response, 415, "unsupported_media_type")


def test_wrong_method_is_405_in_our_shape(api):
    error_of(requests.get(api + "/search", timeout=TIMEOUT), 405, "method_not_allowed")


# -- 503 and 500 ---------------------------------------------------------------------------------------------
def test_index_down_is_503_with_retry_after(api, variant, query, seed_paths):
    variant(index=DownIndex())
    for response in (upload(api, query), upload(api, query, path="/searchByImage"),
                     requests.get(f"{api}/images/{seed_paths[0].name}/similar", timeout=TIMEOUT),
                     requests.get(f"{api}/images/{seed_paths[0].name}", timeout=TIMEOUT),
                     requests.get(f"{api}/stats", timeout=TIMEOUT)):
        assert "unreachable" in error_of(response, 503, "unavailable")
        assert response.headers["Retry-After"].isdigit()
    health = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert health.status_code == 503
    assert health.json()["ok"] is False and health.json()["down"] == ["index"]


def test_storage_down_makes_health_503(api, variant, tmp_path, caplog):
    variant(bucket=str(tmp_path / "no-such-folder"))
    health = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert health.status_code == 503
    body = health.json()
    assert body["down"] == ["storage"] and body["index"]["ok"] is True
    assert "no-such-folder" in caplog.text  # the reason: in the server's log, not in the public answer


def test_unexpected_errors_are_500_without_internals(api, variant):
    variant(index=BrokenIndex())
    message = error_of(requests.get(f"{api}/stats", timeout=TIMEOUT), 500, "internal_error")
    assert "secret" not in message


# -- API key -------------------------------------------------------------------------------------------------
def test_api_key_guards_every_route_but_the_page_and_health(api, variant, query, seed_paths):
    variant(api_key="s3cret-key")
    guarded = [("GET", "/stats"), ("GET", "/openapi.json"), ("GET", f"/images/{seed_paths[0].name}"),
               ("GET", f"/images/{seed_paths[0].name}/content"), ("GET", f"/similar?key={seed_paths[0].name}")]
    for method, path in guarded:
        error_of(requests.request(method, api + path, timeout=TIMEOUT), 401, "missing_api_key")
        error_of(requests.request(method, api + path, headers={"x-api-key": "wrong"}, timeout=TIMEOUT),
                 403, "wrong_api_key")
        ok = requests.request(method, api + path, headers={"x-api-key": "s3cret-key"}, timeout=TIMEOUT)
        assert ok.status_code == 200, (path, ok.text)
    error_of(upload(api, query), 401, "missing_api_key")
    error_of(upload(api, query, headers={"x-api-key": "s3cret-kez"}), 403, "wrong_api_key")
    searched = upload(api, query, headers={"x-api-key": "s3cret-key"})
    assert searched.status_code == 200 and searched.json()["hits"][0]["key"] == seed_paths[0].name
    # An unauthenticated caller learns nothing else, not even that its Content-Type is wrong.
    error_of(requests.post(api + "/search", data=b"x", headers={"Content-Type": "text/plain"}, timeout=TIMEOUT),
             401, "missing_api_key")
    assert requests.get(api + "/", timeout=TIMEOUT).status_code == 200
    assert requests.get(api + "/health", timeout=TIMEOUT).status_code == 200


def test_a_bad_server_setting_is_500_and_the_page_still_loads(api, search_module, monkeypatch):
    monkeypatch.setenv("IMGSEARCH_MAX_PAGE_SIZE", "lots")
    service.reset()  # the next request builds the service from this environment
    assert "IMGSEARCH_MAX_PAGE_SIZE" in error_of(requests.get(f"{api}/stats", timeout=TIMEOUT),
                                                 500, "server_misconfigured")
    assert requests.get(api + "/", timeout=TIMEOUT).status_code == 200


# -- issue 14: configuration chooses where we read; nothing leaks ------------------------------------------------
@pytest.fixture
def planted(variant, seed_service, tmp_path):
    """An index that holds documents naming /proc and a folder outside the allowlist (as an old hole, or a
    hand-made event, could have left them), served with the seed folder as the only allowed storage."""
    import numpy as np

    from imgsearch.index import ImageDocument
    from imgsearch.index.embedded import EmbeddedIndex

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"do not serve")
    index = EmbeddedIndex(tmp_path / "planted", model_id=seed_service.embedder.model_id)
    index.ensure_index()
    vector = np.zeros(512, np.float32)
    vector[0] = 1
    index.upsert([ImageDocument(bucket="/proc", key="self/environ", vector=vector,
                                model_id=seed_service.embedder.model_id, content_type="image/jpeg"),
                  ImageDocument(bucket=str(outside), key="secret.jpg", vector=vector,
                                model_id=seed_service.embedder.model_id, content_type="image/jpeg")])
    variant(index=index)
    yield outside
    index.close()


def test_content_never_reads_outside_the_allowlist(api, planted):
    for bucket, key in (("/proc", "self/environ"), (str(planted), "secret.jpg")):
        for response in (requests.get(f"{api}/image/content", params={"bucket": bucket, "key": key}, timeout=TIMEOUT),
                         requests.get(f"{api}/images/{quote(key, safe='')}/content", params={"bucket": bucket},
                                      timeout=TIMEOUT),
                         requests.get(f"{api}/image", params={"bucket": bucket, "key": key}, timeout=TIMEOUT)):
            error_of(response, 404, "not_found")
            assert b"PATH=" not in response.content and b"do not serve" not in response.content
            assert str(planted).encode() not in response.content


def test_hits_from_a_storage_not_allowed_carry_no_url(api, planted):
    response = requests.get(f"{api}/similar", params={"bucket": "/proc", "key": "self/environ"}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    [hit] = response.json()["hits"]
    assert hit["key"] == "secret.jpg" and hit["url"] is None


def test_bad_buckets_are_400(api):
    for path in ("/image", "/image/content", "/similar"):
        error_of(requests.get(api + path, params={"bucket": "/tmp\x00/x", "key": "a.jpg"}, timeout=TIMEOUT),
                 400, "bad_request")


@pytest.mark.parametrize("key", ["k" * 1025, "é" * 513, "a\x00b.jpg"])
def test_keys_no_object_can_have_are_404(api, key):
    """Schema-valid (the OpenAPI document cannot count UTF-8 bytes), and certainly not indexed."""
    for path in ("/image", "/image/content", "/similar"):
        message = error_of(requests.get(api + path, params={"key": key}, timeout=TIMEOUT), 404, "not_found")
        assert "1024 bytes" in message


def test_health_names_the_part_that_is_down_without_details(api, variant, tmp_path, caplog):
    variant(bucket=str(tmp_path / "no-such-folder"))
    health = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert health.status_code == 503 and health.json()["down"] == ["storage"]
    assert "no-such-folder" not in health.text and str(tmp_path) not in health.text
    assert "no-such-folder" in caplog.text  # the operator finds the reason in the log
    variant(index=DownIndex())
    health = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert health.json()["down"] == ["index"] and "unreachable" not in health.text


def test_health_shows_no_file_system_paths(api, seed_service, seed_dir):
    health = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert health.status_code == 200
    assert str(seed_service.settings.data_dir) not in health.text and str(seed_dir) not in health.text


def test_server_errors_carry_no_internal_paths(api, variant):
    from imgsearch.errors import IncompatibleIndexError

    class Incompatible(DownIndex):
        def _down(self, *args, **kwargs):
            raise IncompatibleIndexError("the index at /srv/secret/index.db holds vectors of another model")

        ensure_index = delete_index = upsert = delete = get = count = search = entries = _down

    variant(index=Incompatible())
    response = requests.get(f"{api}/stats", timeout=TIMEOUT)
    assert "/srv/secret" not in error_of(response, 500, "internal_error")
