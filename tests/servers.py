"""Real servers for integration tests, on 127.0.0.1: reuse one named by an environment variable, else start one.

In CI (IMGSEARCH_REQUIRE_SERVERS=1, or CI set to anything but "", 0, false or no) anything a test needs that
cannot be had, a server, the weights, the int8 model, the seed images, the dataset, the browser, fails the test
instead of skipping it: a CI machine without ../shared must not pass with every model test skipped.
IMGSEARCH_REQUIRE_SERVERS=0 turns that off explicitly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]


def strict(environ=os.environ) -> bool:
    """Must every prerequisite be there? IMGSEARCH_REQUIRE_SERVERS says so (1) or not (0); else CI decides."""
    required = environ.get("IMGSEARCH_REQUIRE_SERVERS", "")
    if required in ("0", "1"):
        return required == "1"
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Fail (strict: CI) or skip the test, saying what is missing."""
    if strict():
        pytest.fail(f"missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def drop_elasticsearch_index(url: str, index: str) -> None:
    """Delete a test index and the whitening index beside it (`<index>_whitening`), either of them missing."""
    requests.delete(f"{url}/{index},{index}_whitening", params={"ignore_unavailable": "true"}, timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60, ok=lambda r: r.status_code < 500) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok(requests.get(url, timeout=2)):
                return True
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return False


def elasticsearch_url() -> str:
    """IMGSEARCH_TEST_ES_URL, or the server infra/elasticsearch/start runs (it reuses a running one)."""
    url = os.environ.get("IMGSEARCH_TEST_ES_URL")
    if not url:
        try:
            url = subprocess.run([str(REPO / "infra/elasticsearch/start")], check=True, capture_output=True,
                                 text=True, timeout=300).stdout.strip().splitlines()[-1]
        except (subprocess.SubprocessError, OSError, IndexError) as exc:
            unavailable(f"no Elasticsearch: set IMGSEARCH_TEST_ES_URL or make infra/elasticsearch/start work ({exc})")
        os.environ["IMGSEARCH_TEST_ES_URL"] = url
    if not wait_for(f"{url}/_cluster/health", timeout=60, ok=lambda r: r.status_code == 200):
        unavailable(f"Elasticsearch at {url} does not answer /_cluster/health")
    return url


class MotoServer:
    """moto's server mode as a separate process: a real HTTP S3 + SQS endpoint."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> "MotoServer":
        executable = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(f"{self.url}/moto-api/"):
            self.stop()
            unavailable("moto_server did not start")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def local_stack(store: str, state: Path, weights_path: str, **environ: str):
    """The whole local stack (infra/local/stack.py up --store localstack|minio) on free ports, with its own state
    folder, index and bucket, on the tests' Elasticsearch; yields up's KEY=VALUE lines and `s3`, a client of its
    store. environ: more settings for every piece (IMGSEARCH_MAX_IMAGE_BYTES=...)."""
    import boto3
    from botocore.config import Config

    env = {**os.environ, "IMGSEARCH_LOCAL_DIR": str(state), "IMGSEARCH_VGG19_WEIGHTS": weights_path,
           "IMGSEARCH_ES_INDEX": f"e2e-{store}-{uuid.uuid4().hex[:8]}", "IMGSEARCH_BUCKET": f"e2e-{store}",
           "IMGSEARCH_LOCAL_ES_PORT": elasticsearch_url().rsplit(":", 1)[1], **environ}
    for name in ("LOCALSTACK", "MINIO", "MINIO_CONSOLE", "WEBHOOK", "API"):
        env[f"IMGSEARCH_LOCAL_{name}_PORT"] = str(free_port())
    stack_py = [sys.executable, str(REPO / "infra/local/stack.py")]
    up = subprocess.run([*stack_py, "up", "--store", store], env=env, capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        subprocess.run([*stack_py, "down", "--keep-elasticsearch"], env=env, capture_output=True)
        unavailable(f"infra/local/up --store {store} failed:\n{up.stderr[-3000:]}")
    values = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    s3 = boto3.client("s3", endpoint_url=values["AWS_ENDPOINT_URL"], aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    try:
        yield {"store": store, "s3": s3, **values}
    finally:
        subprocess.run([*stack_py, "down", "--keep-elasticsearch"], env=env, capture_output=True, timeout=120)
        drop_elasticsearch_index(values["IMGSEARCH_ES_URL"], env["IMGSEARCH_ES_INDEX"])  # and its _whitening
