"""The page's "Add to the bucket", end to end on the real local stack (infra/local/up --store localstack:
LocalStack's S3 and SQS, the worker playing Lambda's SQS trigger, Elasticsearch, `imgsearch serve`), in
Chromium. The page asks the API for a presigned POST (POST /uploads) and sends the file straight to LocalStack's
S3 (cross-origin: the bucket's CORS rule, set by localstack/setup_resources.py); the object's event goes
through SQS to the worker, which indexes it; the page says "indexing…" until GET /image knows the key, then
shows what looks like it, itself left out.

Which servers enforce the form's policy: LocalStack 4.13 checks its conditions (content-length-range,
Content-Type, key, bucket, expiry) but not its signature; MinIO checks both; moto's server checks neither. So
the refusals are tested here, on LocalStack.
"""

from __future__ import annotations

import re

import pytest
import requests

from helpers import reencoded_copy
from servers import local_stack

MAX_BYTES = 1_000_000  # the stack's IMGSEARCH_MAX_IMAGE_BYTES: an oversized file stays quick to send
UPLOAD_KEY = re.compile(r"uploads/[0-9a-f]{32}\.jpg")
# Every text the page's message line shows, in order: "indexing…" may last only a second or two.
RECORD_MESSAGES = """
window.messages = [];
const line = document.getElementById("message");
new MutationObserver(() => window.messages.push(line.textContent))
  .observe(line, {childList: true, characterData: true, subtree: true});
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, weights_path, seed_paths):
    with local_stack("localstack", tmp_path_factory.mktemp("page-upload"), weights_path,
                     IMGSEARCH_MAX_IMAGE_BYTES=str(MAX_BYTES)) as values:
        for path in seed_paths:
            values["s3"].put_object(Bucket=values["IMGSEARCH_BUCKET"], Key=f"seed/{path.name}",
                                    Body=path.read_bytes(), ContentType="image/jpeg")
        wait_until(lambda: api(values, "/stats").json()["documents"] == len(seed_paths), "the seed images")
        yield values


def api(stack, path, method="GET", **kwargs) -> requests.Response:
    return requests.request(method, stack["IMGSEARCH_API_URL"] + path, timeout=60, **kwargs)


def wait_until(condition, what: str, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def uploads(stack) -> set[str]:
    listed = stack["s3"].list_objects_v2(Bucket=stack["IMGSEARCH_BUCKET"], Prefix="uploads/")
    return {item["Key"] for item in listed.get("Contents", [])}


def test_an_added_image_lands_in_the_bucket_is_indexed_and_searched_with(stack, browser, seed_paths, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    original = seed_paths[0]
    photo = tmp_path / "holiday photo.jpg"
    photo.write_bytes(reencoded_copy(original))
    before = uploads(stack)
    browser.get(stack["IMGSEARCH_API_URL"] + "/")
    WebDriverWait(browser, 30).until(lambda d: "indexed" in d.find_element(By.ID, "stats").text)
    browser.execute_script(RECORD_MESSAGES)

    browser.find_element(By.ID, "addFile").send_keys(str(photo))
    WebDriverWait(browser, 180).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result .name")
                                      or "error" in d.find_element(By.ID, "message").get_attribute("class"))
    assert browser.find_element(By.ID, "message").text == ""  # no error shown

    # The object landed under a key the server chose, with the type the browser named and the bytes it sent.
    [key] = uploads(stack) - before
    assert UPLOAD_KEY.fullmatch(key) and "holiday" not in key
    stored = stack["s3"].get_object(Bucket=stack["IMGSEARCH_BUCKET"], Key=key)
    assert stored["ContentType"] == "image/jpeg" and stored["Body"].read() == photo.read_bytes()
    # The event path indexed it (LocalStack S3 -> SQS -> the worker -> Elasticsearch).
    assert api(stack, "/image", params={"key": key}).status_code == 200
    # The page said so while it waited, then searched with it: its original first, itself left out.
    messages = browser.execute_script("return window.messages")
    indexing = [i for i, text in enumerate(messages) if "indexing…" in text]
    assert indexing and key in messages[indexing[0]], messages
    assert "Searching…" in messages[indexing[-1]:], messages
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .result .name")]
    assert names == [f"seed/{original.name}"], names
    assert browser.find_element(By.CSS_SELECTOR, "#verifiedHits .result .name").text == names[0]
    assert key in browser.find_element(By.ID, "queryInfo").text
    assert key not in [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .result .name")]


def test_the_page_shows_why_a_file_cannot_be_added(stack, browser, tmp_path):
    """A type the decoder does not read is refused by the API before anything is sent; a file over the limit by
    the page, with the limit the API's form names (S3 would refuse it anyway: next test)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    before = uploads(stack)
    browser.get(stack["IMGSEARCH_API_URL"] + "/")
    message = browser.find_element(By.ID, "message")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    browser.find_element(By.ID, "addFile").send_keys(str(notes))
    WebDriverWait(browser, 60).until(lambda d: "content_type must be one of" in message.text)
    assert message.get_attribute("class") == "error"

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES))
    browser.find_element(By.ID, "addFile").send_keys(str(big))
    WebDriverWait(browser, 60).until(lambda d: f"at most {MAX_BYTES // 1024} KB" in message.text)
    assert message.get_attribute("class") == "error" and uploads(stack) == before


def test_the_bucket_enforces_the_forms_policy(stack, seed_paths):
    """What S3 itself refuses, whoever sends the form: a file over the limit, an empty one, another Content-Type,
    another key (here: an indexed image's). Nothing lands; the form as given works."""
    s3, bucket = stack["s3"], stack["IMGSEARCH_BUCKET"]
    jpeg = seed_paths[1].read_bytes()
    indexed = f"seed/{seed_paths[0].name}"
    etag = s3.head_object(Bucket=bucket, Key=indexed)["ETag"]

    def send(data: bytes, **override) -> tuple[dict, requests.Response]:
        response = api(stack, "/uploads", "POST", json={"content_type": "image/jpeg"})
        assert response.status_code == 200, response.text
        ticket = response.json()
        fields = {**ticket["fields"], **override}
        return ticket, requests.post(ticket["url"], data=fields, timeout=60,
                                     files={"file": ("photo.jpg", data, fields["Content-Type"])})

    refused = []
    for data, override, status, code in [
        (jpeg + bytes(MAX_BYTES + 1 - len(jpeg)), {}, 400, "EntityTooLarge"),
        (b"", {}, 400, "EntityTooSmall"),
        (jpeg, {"Content-Type": "text/html"}, 403, "Policy Condition failed"),
        (jpeg, {"key": indexed}, 403, "Policy Condition failed"),
    ]:
        ticket, response = send(data, **override)
        assert response.status_code == status and code in response.text, (override, response.text)
        refused.append(ticket["key"])
    assert not uploads(stack) & set(refused)
    assert s3.head_object(Bucket=bucket, Key=indexed)["ETag"] == etag  # the indexed image is untouched

    ticket, response = send(jpeg)
    assert response.status_code == 204, response.text
    assert s3.get_object(Bucket=bucket, Key=ticket["key"])["Body"].read() == jpeg


def test_the_buckets_cors_rule_names_the_page_and_nothing_else(stack):
    """The browser reads S3's answer to the form only if the bucket's CORS rule names the page's origin."""
    url = api(stack, "/uploads", "POST", json={"content_type": "image/png"}).json()["url"]
    page = stack["IMGSEARCH_API_URL"]
    for origin, allowed in ((page, True), ("http://elsewhere.example", False)):
        preflight = requests.options(url, timeout=30, headers={"Origin": origin,
                                                               "Access-Control-Request-Method": "POST"})
        assert (preflight.headers.get("Access-Control-Allow-Origin") == origin) is allowed, preflight.headers
        assert (preflight.status_code == 200) is allowed, preflight.text
