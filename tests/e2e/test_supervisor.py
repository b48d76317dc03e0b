"""The local stack keeps itself running (issue 17, item 0): on the LocalStack path, the worker SIGKILLed in the
middle of an ingest is started again by its supervisor, with nobody running `up`; what was uploaded after the
kill becomes searchable, and what the dead worker held comes back from the queue (nothing lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import requests
from botocore.config import Config

from helpers import reencoded_copy
from servers import REPO, drop_elasticsearch_index, elasticsearch_url, free_port, unavailable

STACK_PY = [sys.executable, str(REPO / "infra/local/stack.py")]
VISIBILITY_TIMEOUT = 30  # what the killed worker held returns after this (the default, 60, would double the test)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, weights_path):
    state = tmp_path_factory.mktemp("local-supervised")
    env = {**os.environ, "IMGSEARCH_LOCAL_DIR": str(state), "IMGSEARCH_VGG19_WEIGHTS": weights_path,
           "IMGSEARCH_ES_INDEX": f"e2e-supervised-{uuid.uuid4().hex[:8]}", "IMGSEARCH_BUCKET": "e2e-supervised",
           "IMGSEARCH_LOCAL_ES_PORT": elasticsearch_url().rsplit(":", 1)[1],
           "IMGSEARCH_QUEUE_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT)}
    for name in ("LOCALSTACK", "API"):
        env[f"IMGSEARCH_LOCAL_{name}_PORT"] = str(free_port())
    up = subprocess.run([*STACK_PY, "up", "--store", "localstack"], env=env, capture_output=True, text=True,
                        timeout=900)
    if up.returncode != 0:
        subprocess.run([*STACK_PY, "down", "--keep-elasticsearch"], env=env, capture_output=True)
        unavailable(f"infra/local/up --store localstack failed:\n{up.stderr[-3000:]}")
    values = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    client = {"endpoint_url": values["AWS_ENDPOINT_URL"], "aws_access_key_id": "test",
              "aws_secret_access_key": "test", "region_name": "us-east-1"}
    yield {**values, "env": env, "state": state,
           "s3": boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **client),
           "sqs": boto3.client("sqs", **client)}
    subprocess.run([*STACK_PY, "down", "--keep-elasticsearch"], env=env, capture_output=True, timeout=120)
    drop_elasticsearch_index(values["IMGSEARCH_ES_URL"], env["IMGSEARCH_ES_INDEX"])  # and its _whitening


def status(stack) -> dict:
    done = subprocess.run([*STACK_PY, "status"], env=stack["env"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def indexed_keys(stack) -> set[str]:
    """The keys in the index, straight from Elasticsearch (refreshed, so nothing waits for a refresh)."""
    url = f"{stack['IMGSEARCH_ES_URL']}/{stack['IMGSEARCH_ES_INDEX']}"
    requests.post(f"{url}/_refresh", timeout=10)
    response = requests.post(f"{url}/_search", json={"size": 100, "_source": ["file_name"]}, timeout=10)
    if response.status_code == 404:
        return set()
    return {hit["_source"]["file_name"] for hit in response.json()["hits"]["hits"]}


def in_flight(stack) -> int:
    attributes = stack["sqs"].get_queue_attributes(QueueUrl=stack["IMGSEARCH_QUEUE_URL"],
                                                   AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"])


def test_worker_killed_mid_ingest_is_restarted_and_ingest_resumes(stack, seed_paths):
    s3, bucket = stack["s3"], stack["IMGSEARCH_BUCKET"]
    before = status(stack)
    assert before["worker"]["state"] == "running", before["worker"]
    assert before["queue"]["dead_letters"] == 0
    victim = before["worker"]["child"]

    # Mid-ingest: the worker has taken a batch off the queue and not finished it.
    early = [f"before-kill/{path.name}" for path in seed_paths]
    for key, path in zip(early, seed_paths):
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")
    wait_until(lambda: in_flight(stack) > 0, 30, "the worker to take messages")
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    # Uploaded after the kill: nobody runs `up`; the supervisor must bring a new worker.
    late = "after-kill/re-encoded.jpg"
    s3.put_object(Bucket=bucket, Key=late, Body=reencoded_copy(seed_paths[0]), ContentType="image/jpeg")
    seen = wait_until(lambda: (lambda s: s if s["worker"]["state"] in ("restarting", "starting", "running")
                               and s["worker"]["child"] != victim else None)(status(stack)),
                      30, "status to show the worker coming back")
    assert seen["worker"]["restarts"] >= 1 and seen["worker"]["last_exit"] == -signal.SIGKILL, seen["worker"]

    wait_until(lambda: late in indexed_keys(stack), 90, "the upload after the kill to be indexed")
    resumed_after = time.monotonic() - killed_at
    # What the killed worker held returns after the visibility timeout and is indexed too: nothing lost.
    wait_until(lambda: set(early) <= indexed_keys(stack), VISIBILITY_TIMEOUT + 60, "every upload to be indexed")
    assert indexed_keys(stack) == {*early, late}

    # Searchable through the API, the new worker running and beating, the queue drained, no dead letters.
    search = requests.post(f"{stack['IMGSEARCH_API_URL']}/search", timeout=60,
                           files={"file": ("q.jpg", reencoded_copy(seed_paths[0]), "image/jpeg")},
                           data={"prefix": "after-kill/"})
    assert search.status_code == 200 and search.json()["hits"][0]["key"] == late, search.text
    after = wait_until(lambda: (lambda s: s if s["queue"]["waiting"] == s["queue"]["in_flight"] == 0 else None)(
        status(stack)), 30, "the queue to drain")
    assert after["worker"]["state"] == "running" and after["worker"]["child"] not in (None, victim), after["worker"]
    assert after["worker"]["heartbeat_age_s"] < 15
    assert after["queue"]["dead_letters"] == 0
    print(f"ingest resumed {resumed_after:.1f} s after the SIGKILL")
