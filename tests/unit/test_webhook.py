"""The MinIO webhook receiver (`imgsearch webhook`): token always, JSON only, a capped body, no exception text."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from imgsearch.errors import ConfigError
from imgsearch.local import MAX_WEBHOOK_BODY, FailureLog, make_webhook_server

TOKEN = "hook-token-123"


@pytest.fixture
def webhook(tmp_path):
    calls = []

    def handler(event, context):
        calls.append(event)
        if event.get("boom"):
            raise RuntimeError("secret internal detail at /srv/app")
        return {"applied": ["indexed"], "rejected": []}

    server = make_webhook_server("127.0.0.1", 0, handler, FailureLog(tmp_path / "failures.jsonl"), TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], calls
    server.shutdown()
    server.server_close()


def post(port, body: bytes, headers: dict, method: str = "POST"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, "/")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        if body:
            connection.send(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def headers(body: bytes, **extra) -> dict:
    return {"Content-Type": "application/json", "Content-Length": str(len(body)),
            "Authorization": f"Bearer {TOKEN}", **extra}


def test_a_token_is_required(tmp_path):
    with pytest.raises(ConfigError):
        make_webhook_server("127.0.0.1", 0, lambda e, c: {}, FailureLog(tmp_path / "f.jsonl"), None)
    with pytest.raises(ConfigError):
        make_webhook_server("127.0.0.1", 0, lambda e, c: {}, FailureLog(tmp_path / "f.jsonl"), "")


def test_a_good_request_reaches_the_handler(webhook):
    port, calls = webhook
    body = b'{"EventName": "s3:ObjectCreated:Put"}'
    assert post(port, body, headers(body))[0] == 200 and len(calls) == 1
    raw_token = {**headers(body), "Authorization": TOKEN}  # MinIO sends the token as it is when it has a space
    assert post(port, body, raw_token)[0] == 200


@pytest.mark.parametrize("change, status", [
    ({"Authorization": None}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": "Bearer "}, 401),
    ({"Content-Type": "text/plain"}, 415), ({"Content-Type": None}, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({"Content-Length": "abc"}, 400), ({"Content-Length": "-1"}, 400), ({"Content-Length": None}, 411),
    ({"Content-Length": str(MAX_WEBHOOK_BODY + 1)}, 413), ({"Content-Length": "99999999999999999999"}, 413),
])
def test_bad_requests_are_refused_before_the_body_is_read(webhook, change, status):
    port, calls = webhook
    body = b'{"EventName": "s3:ObjectCreated:Put"}'
    sent = {k: v for k, v in {**headers(body), **change}.items() if v is not None}
    answer, data = post(port, body if status != 413 else b"", sent)
    assert answer == status, data
    assert calls == [] and set(json.loads(data)) == {"message"}


def test_failures_need_the_token_too(webhook):
    port, _ = webhook
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/failures")
    assert connection.getresponse().status == 401
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/failures", headers={"Authorization": f"Bearer {TOKEN}"})
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"failures": []}
    connection.close()


def test_a_crash_is_500_without_its_text(webhook):
    port, _ = webhook
    body = b'{"boom": true}'
    status, data = post(port, body, headers(body))
    assert status == 500 and b"secret" not in data and b"/srv" not in data
