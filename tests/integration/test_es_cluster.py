"""Three Elasticsearch nodes (issue 17): infra/elasticsearch/cluster starts them as plain processes; the index
expands to one replica by itself (auto_expand_replicas 0-1) and the client knows every node. A node SIGKILLed in
the middle of an ingest: the writes go on, searches keep answering, nothing is lost, and the cluster is green
again once the node is back."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from imgsearch.config import Settings
from imgsearch.errors import BackendUnavailableError
from imgsearch.index import ImageDocument, SearchRequest
from imgsearch.index.elasticsearch import ElasticsearchIndex
from imgsearch.index.es_client import make_client
from servers import REPO, unavailable

CLUSTER = REPO / "infra/elasticsearch/cluster"
MODEL = "test-model"


def free_block() -> int:
    """A base port whose HTTP (base..base+2) and transport (base+100..base+102) ports are all free."""
    for base in range(21000, 40000, 250):
        try:
            for port in [*range(base, base + 3), *range(base + 100, base + 103)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


@pytest.fixture(scope="module")
def cluster():
    home = Path(tempfile.mkdtemp(prefix="imgsearch-es-cluster-"))
    home.chmod(0o755)  # the nodes run as their own user when we are root
    env = {**os.environ, "IMGSEARCH_ES_CLUSTER_HOME": str(home), "IMGSEARCH_ES_CLUSTER_PORT": str(free_block())}
    started = subprocess.run([str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, timeout=300)
        unavailable(f"infra/elasticsearch/cluster start failed:\n{started.stderr[-3000:]}")
    yield started.stdout.strip(), env
    subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, timeout=300)
    shutil.rmtree(home, ignore_errors=True)


def documents(n: int) -> list[ImageDocument]:
    rng = np.random.default_rng(7)
    vectors = np.abs(rng.normal(size=(n, 512))).astype(np.float32) ** 3
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [ImageDocument(bucket="b", key=f"img/{i:04d}.jpg", vector=v, model_id=MODEL, etag=f"e{i}")
            for i, v in enumerate(vectors)]


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except BackendUnavailableError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_node_lost_mid_ingest_loses_nothing_and_the_cluster_heals(cluster):
    urls, env = cluster
    assert len(urls.split(",")) == 3
    client = make_client(Settings.from_env({"IMGSEARCH_ES_URL": urls, "IMGSEARCH_ES_TIMEOUT": "10"}))
    index = ElasticsearchIndex(client, index="cluster-test", model_id=MODEL)
    index.ensure_index()
    health = lambda: client.cluster.health(index="cluster-test")  # noqa: E731
    until(lambda: health()["status"] == "green", 120, "the index green on three nodes")
    replicas = client.indices.get_settings(index="cluster-test")["cluster-test"]["settings"]["index"]
    assert replicas["number_of_replicas"] == "1"  # auto_expand_replicas 0-1: one copy besides the primary

    docs = documents(120)
    index.upsert(docs[:60])
    node = subprocess.run([str(CLUSTER), "pid", "3"], env=env, capture_output=True, text=True, check=True)
    os.kill(int(node.stdout.strip()), signal.SIGKILL)
    for start in range(60, 120, 20):  # the ingest goes on; a write caught by the fail-over is retried, as the
        until(lambda: index.upsert(docs[start:start + 20]) or True, 120, "the writes to go through")  # queue would

    index.refresh()
    assert health()["status"] in ("yellow", "green") and health()["number_of_nodes"] == 2
    assert index.count() == 120  # nothing lost
    found = index.search(SearchRequest(vector=docs[77].vector, page_size=3, mode="knn"))
    assert found.hits[0].document.key == "img/0077.jpg"  # searches keep answering

    restarted = subprocess.run([str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    until(lambda: (lambda h: h["status"] == "green" and h["number_of_nodes"] == 3)(health()), 180,
          "the cluster green again with the node back")
    assert index.count() == 120
    index.delete_index()
