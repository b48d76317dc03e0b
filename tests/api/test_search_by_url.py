"""Search by URL over real HTTP (issue 16, item 4): POST /search with JSON {"url": ...} and `imgsearch search URL`,
fetching from a real server on 127.0.0.1 (tests/http_images.py). With IMGSEARCH_URL_ALLOW_PRIVATE on, the seed
image's copy at a URL finds its original first; with the default, loopback, private, link-local and metadata
targets, other schemes and credentials are refused with a 400 saying why; redirects are counted, the byte limit
holds while streaming, a server that fails is a 502. The unit tests (tests/unit/test_fetch.py) check the address
table, redirects to refused hosts, DNS rebinding and the timeouts in detail."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers import error_of, reencoded_copy
from http_images import ImageServer

TIMEOUT = 120
IMGSEARCH = str(Path(sys.executable).with_name("imgsearch"))


@pytest.fixture(scope="module")
def query(seed_paths) -> bytes:
    return reencoded_copy(seed_paths[0])


@pytest.fixture
def images(query):
    with ImageServer(query, large_size=200_000) as server:
        server.serve("/query.jpg", query)
        yield server


@pytest.fixture
def allow_private(variant):
    """The API under IMGSEARCH_URL_ALLOW_PRIVATE=true (tests and local use only)."""
    return variant(url_allow_private=True)


def by_url(api: str, url, *, params=None, **extra):
    return requests.post(api + "/search", params=params, json={"url": url, **extra}, timeout=TIMEOUT)


# -- found ---------------------------------------------------------------------------------------------------------
def test_a_url_finds_the_seed_images_original_first(api, allow_private, images, seed_paths):
    response = by_url(api, images.url("/query.jpg"), page_size=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hits"][0]["key"] == seed_paths[0].name
    assert body["page_size"] == 3  # parameters ride along as JSON keys
    assert images.requests == [("/query.jpg", f"127.0.0.1:{images.port}")]


def test_a_url_through_redirects_finds_it_too(api, allow_private, images, seed_paths):
    response = by_url(api, images.url("/redirect/3", host="localhost"), params={"page_size": "2"})
    assert response.status_code == 200, response.text
    assert response.json()["hits"][0]["key"] == seed_paths[0].name
    assert len(images.requests) == 4


# -- refused by default: 400, saying why --------------------------------------------------------------------------
@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:{port}/query.jpg", "127.0.0.1 is not a public internet host"),
    ("http://localhost:{port}/query.jpg", "localhost is not a public internet host"),
    ("http://[::1]:{port}/query.jpg", "::1 is not a public internet host"),
    ("http://[::ffff:127.0.0.1]:{port}/query.jpg", "not a public internet host"),
    ("http://10.0.0.1/query.jpg", "10.0.0.1 is not a public internet host"),
    ("http://192.168.1.10/query.jpg", "not a public internet host"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public internet host"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is not a public internet host"),
    ("http://0.0.0.0:{port}/query.jpg", "not a public internet host"),
    ("file:///etc/passwd", "only http:// and https:// URLs"),
    ("ftp://127.0.0.1/query.jpg", "only http:// and https:// URLs"),
    ("gopher://127.0.0.1:{port}/", "only http:// and https:// URLs"),
    ("http://user:pass@127.0.0.1:{port}/query.jpg", "credentials"),
    ("https://token@example.com/query.jpg", "credentials"),
])
def test_targets_are_refused_by_default_with_the_reason(api, images, url, reason):
    message = error_of(by_url(api, url.format(port=images.port)), 400, "bad_request")
    assert reason in message
    assert "loopback, private, link-local" in message or "not a public" not in reason
    assert not images.requests  # nothing was fetched


def test_the_refusal_names_no_resolved_address(api, images):
    message = error_of(by_url(api, images.url("/query.jpg", host="localhost")), 400, "bad_request")
    assert "127.0.0.1" not in message and "::1" not in message


def test_bad_parameters_are_refused_before_fetching(api, allow_private, images):
    assert "page_size" in error_of(by_url(api, images.url("/query.jpg"), page_size=0), 400, "bad_request")
    assert not images.requests


@pytest.mark.parametrize("body, named", [
    ({"url": "http://example.com/a.jpg", "image": "AAAA"}, "not both"),
    ({"url": "http://example.com/a.jpg", "image": None}, "not both"),
    ({"url": 12}, "'url'"), ({"url": ""}, "'url'"), ({"url": None}, "'url'"), ({"url": ["http://a.example"]}, "'url'"),
])
def test_malformed_url_bodies_are_400(api, body, named):
    response = requests.post(api + "/search", json=body, timeout=TIMEOUT)
    assert named in error_of(response, 400, "bad_request")


def test_the_demo_route_takes_no_url(api, allow_private, images):
    response = requests.post(api + "/searchByImage", json={"url": images.url("/query.jpg")}, timeout=TIMEOUT)
    error_of(response, 400, "bad_request")
    assert not images.requests


# -- limits and failures, with private targets allowed -------------------------------------------------------------
def test_too_many_redirects_are_400(api, allow_private, images):
    assert "redirects more than 3 times" in error_of(by_url(api, images.url("/redirect/4")), 400, "bad_request")


def test_the_byte_limit_holds_while_streaming(api, variant, images):
    variant(url_allow_private=True, max_image_bytes=100_000)
    for path in ("/large", "/endless", "/lying-length"):  # declared, undeclared, declared and never sent
        message = error_of(by_url(api, images.url(path)), 413, "image_too_large")
        assert "100000 bytes" in message and "IMGSEARCH_MAX_IMAGE_BYTES" in message


def test_a_page_that_is_no_image_is_415(api, allow_private, images):
    assert "not an image" in error_of(by_url(api, images.url("/text")), 415, "bad_image")


@pytest.mark.parametrize("status", [404, 500])
def test_an_error_status_upstream_is_502(api, allow_private, images, status):
    message = error_of(by_url(api, images.url(f"/status/{status}")), 502, "url_fetch_failed")
    assert f"answered HTTP {status}" in message


def test_a_host_that_does_not_resolve_is_502(api, allow_private, monkeypatch):
    real = socket.getaddrinfo

    def no_such_host(host, *args, **kwargs):  # .invalid: NXDOMAIN, without asking a DNS server
        if str(host).endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    message = error_of(by_url(api, "http://no-such-host.invalid/a.jpg"), 502, "url_fetch_failed")
    assert "could not resolve the host no-such-host.invalid" in message


def test_a_server_that_does_not_answer_is_502_after_the_read_timeout(api, allow_private, images):
    message = error_of(by_url(api, images.url("/hang")), 502, "url_fetch_failed")
    assert "did not answer within 5 s" in message


# -- the OpenAPI document says it --------------------------------------------------------------------------------
def test_the_document_describes_url_and_its_form(api):
    from imgsearch.errors import InvalidRequestError
    from imgsearch.fetch import parse_url

    document = requests.get(api + "/openapi.json", timeout=TIMEOUT).json()
    schema = document["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    url = schema["properties"]["url"]
    assert url["format"] == "uri" and schema["oneOf"] == [{"required": ["image"]}, {"required": ["url"]}]
    assert "502" in document["paths"]["/search"]["post"]["responses"]
    pattern = re.compile(url["pattern"])
    for candidate in ("https://example.com/a.jpg", "HTTP://example.com", "http://example.com:8080/a?b=c#d",
                      "http://[2606:4700::1]/a.jpg", "http://example.com/user@host", "http://bücher.example/",
                      "file:///etc/passwd", "ftp://example.com/a.jpg", "http://u:p@example.com/",
                      "http://example.com/a b", "http:/example.com", "http://", "http://x/\x00", "//example.com"):
        try:
            parse_url(candidate)
            accepted = True
        except InvalidRequestError:
            accepted = False
        assert bool(pattern.match(candidate)) == accepted, candidate


# -- the command line -------------------------------------------------------------------------------------------
def test_the_cli_searches_by_url(seed_service, images, seed_paths, weights_path):
    env = {**os.environ, "IMGSEARCH_BACKEND": "embedded", "IMGSEARCH_DATA_DIR": str(seed_service.settings.data_dir),
           "IMGSEARCH_VGG19_WEIGHTS": weights_path}
    refused = subprocess.run([IMGSEARCH, "search", images.url("/query.jpg"), "--json"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and "127.0.0.1 is not a public internet host" in refused.stderr, refused.stderr
    assert not images.requests
    allowed = subprocess.run([IMGSEARCH, "search", images.url("/query.jpg"), "--json", "--top-k", "3"],
                             env={**env, "IMGSEARCH_URL_ALLOW_PRIVATE": "true"}, capture_output=True, text=True,
                             timeout=600)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert json.loads(allowed.stdout)["hits"][0]["key"] == seed_paths[0].name
    other = subprocess.run([IMGSEARCH, "search", "ftp://127.0.0.1/query.jpg"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert other.returncode == 1 and "only http:// and https:// URLs" in other.stderr
