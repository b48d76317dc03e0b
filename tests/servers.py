"""Real servers for integration tests, on 127.0.0.1: reuse one named by an environment variable, else start one.

With IMGSEARCH_REQUIRE_SERVERS=1 (CI) a server that cannot be had fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]


def unavailable(reason: str):
    if os.environ.get("IMGSEARCH_REQUIRE_SERVERS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


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
