"""The Elasticsearch backend against a real server: agreement with the embedded index, kNN recall,
the demo-compatible mapping, and an outage that loses nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from elasticsearch import Elasticsearch

from imgsearch.errors import BackendUnavailableError
from imgsearch.index import ImageDocument, SearchRequest
from imgsearch.index.elasticsearch import ElasticsearchIndex
from imgsearch.index.es_strategies import ScriptScoreExact
from imgsearch.index.embedded import EmbeddedIndex

from helpers import WhitenedColourEmbedder, distinct_colours, png
from servers import REPO, drop_elasticsearch_index, elasticsearch_url, free_port

MODEL = "test-model"


def unit_vectors(n, seed, dim=512):
    vectors = np.abs(np.random.default_rng(seed).normal(size=(n, dim))).astype(np.float32) ** 3  # (n, 512)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def docs(vectors):
    return [ImageDocument(bucket="b", key=f"{i:05d}.jpg", vector=v, model_id=MODEL) for i, v in enumerate(vectors)]


@pytest.fixture
def es_index():
    created = []

    def make(**options):
        index = ElasticsearchIndex(Elasticsearch(elasticsearch_url(), request_timeout=60),
                                   index=f"test-{uuid.uuid4().hex[:12]}", model_id=MODEL, **options)
        index.ensure_index()
        created.append(index)
        return index

    yield make
    for index in created:
        index.delete_index()


def test_test_teardown_drops_the_whitening_index_too(es_index):
    """What the fixtures that name an index (integration, e2e) call afterwards: nothing is left on a reused server."""
    index = es_index()
    assert index.client.indices.exists(index=index.whitening_index)
    drop_elasticsearch_index(elasticsearch_url(), index.index)
    assert not index.client.indices.exists(index=index.index)
    assert not index.client.indices.exists(index=index.whitening_index)
    drop_elasticsearch_index(elasticsearch_url(), index.index)  # both missing: still fine


def test_mapping_is_compatible_with_the_demo(es_index):
    index = es_index()
    mapping = requests.get(f"{elasticsearch_url()}/{index.index}/_mapping", timeout=10).json()
    props = mapping[index.index]["mappings"]["properties"]
    assert props["file_name"] == {"type": "keyword"}
    vector = props["feature_vector"]
    assert (vector["type"], vector["dims"], vector["similarity"]) == ("dense_vector", 512, "cosine")
    assert vector["index_options"]["type"] == "hnsw"  # explicit, never the quantised default


def test_exact_results_agree_with_the_embedded_index(es_index, tmp_path):
    vectors = unit_vectors(300, seed=1)
    embedded = EmbeddedIndex(tmp_path, model_id=MODEL)
    embedded.ensure_index()
    flat = es_index(vector_index="flat")
    for index in (embedded, flat):
        index.upsert(docs(vectors))
        index.refresh()
    for q, query in enumerate(unit_vectors(5, seed=2)):
        request = SearchRequest(vector=query, page=2, page_size=7, min_score=0.3 if q % 2 else None, mode="exact")
        ours, theirs = embedded.search(request), flat.search(request)
        assert [h.document.doc_id for h in ours.hits] == [h.document.doc_id for h in theirs.hits]
        np.testing.assert_allclose([h.score for h in ours.hits], [h.score for h in theirs.hits], atol=1e-5)
        assert ours.total == theirs.total


def test_knn_recall_at_10_against_exact_on_10k_vectors(es_index):
    vectors = unit_vectors(10_000, seed=3)
    index = es_index(vector_index="hnsw", knn_candidates=100)
    index.upsert(docs(vectors))
    index.refresh()
    queries = unit_vectors(50, seed=4)
    recalls = []
    for query in queries:
        truth = set(np.argsort(-(vectors @ query))[:10])
        found = index.search(SearchRequest(vector=query, page_size=10, mode="knn")).hits
        recalls.append(len(truth & {int(h.key[:5]) for h in found}))
    assert sum(recalls) >= 0.95 * 10 * len(queries), f"recall@10 = {sum(recalls) / 10 / len(queries):.3f}"  # integers: no float edge


def test_the_whitening_grows_with_an_index_fed_by_events(tmp_path):
    """The pipeline's refits on a real server: near-real-time counts, the companion whitening index, bulk
    updates of vectors; every vector ends up made with the stored whitening."""
    from imgsearch.config import Settings
    from imgsearch.options import SearchOptions
    from imgsearch.pipeline import ImageSearch
    from imgsearch.storage import FolderStorage
    from imgsearch.whitening import MIN_IMAGES

    embedder = WhitenedColourEmbedder()
    index = ElasticsearchIndex(Elasticsearch(elasticsearch_url(), request_timeout=60),
                               index=f"test-{uuid.uuid4().hex[:12]}", model_id=embedder.model_id)
    index.ensure_index()
    folder = FolderStorage(tmp_path)
    search = ImageSearch(Settings.from_env({}), embedder=embedder, index=index)
    try:
        images = distinct_colours(MIN_IMAGES + 8)
        for i, colour in enumerate(images):
            folder.put(f"{i:02d}.png", png(colour))
            search.ingester.sync_object(folder, f"{i:02d}.png")
            search.upkeep.after_ingest()  # as the extract handler does after each event
        index.refresh()
        whitening_id, fitted_on = index.whitenings.info()
        assert MIN_IMAGES <= fitted_on <= len(images) and index.count(stale_for=whitening_id) == 0
        assert index.get(search.searcher.document(folder.bucket, "00.png").doc_id).whitening == whitening_id
        for i, colour in enumerate(images):
            best = search.searcher.search_image(png(colour), SearchOptions(page_size=1, rerank=False)).hits[0]
            assert best.key == f"{i:02d}.png" and best.score == pytest.approx(1.0, abs=1e-3)
    finally:
        index.delete_index()
    assert not index.client.indices.exists(index=index.whitening_index)  # outside finally: a failure above stays


def test_script_score_request_is_the_demos_cosine_shifted_by_one():
    request = SearchRequest(vector=np.full(512, 1 / np.sqrt(512), np.float32), min_score=0.8, page=3, page_size=10)
    body = ScriptScoreExact().body(request, filters=[])
    script = body["query"]["script_score"]["script"]
    assert script["source"] == "cosineSimilarity(params.query_vector, 'feature_vector') + 1.0"
    assert len(script["params"]["query_vector"]) == 512
    assert body["min_score"] == pytest.approx(1.8) and body["from"] == 20 and body["size"] == 10
    assert ScriptScoreExact.to_cosine(1.75) == pytest.approx(0.75)


def test_exact_mode_without_painless_on_hnsw_names_both_remedies(es_index):
    index = es_index(vector_index="hnsw")
    if index.has_painless():  # no skip: a server with painless must run script_score
        assert index.search(SearchRequest(vector=unit_vectors(1, 5)[0], mode="exact")).hits == []
        return
    with pytest.raises(Exception, match="painless.*flat"):
        index.search(SearchRequest(vector=unit_vectors(1, 5)[0], mode="exact"))


@pytest.fixture
def private_server():
    """A second Elasticsearch of our own on another port, so the test may stop it."""
    # The server's own user must reach this folder (as root it is not us): not under /tmp/pytest-of-root.
    home = Path("/var/tmp") / f"imgsearch-es-outage-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "IMGSEARCH_ES_PORT": str(free_port()), "IMGSEARCH_ES_HOME": str(home)}
    start = subprocess.run([str(REPO / "infra/elasticsearch/start")], env=env, capture_output=True, text=True,
                           timeout=300)
    if start.returncode != 0:
        pytest.fail(f"could not start a private Elasticsearch: {start.stderr[-2000:]}")
    url = start.stdout.strip().splitlines()[-1]

    def control(action):
        subprocess.run([str(REPO / f"infra/elasticsearch/{action}")], env=env, check=True, capture_output=True,
                       timeout=300)

    yield url, control
    control("stop")
    shutil.rmtree(home, ignore_errors=True)


def test_outage_is_a_transient_error_and_loses_nothing(private_server):
    url, control = private_server
    index = ElasticsearchIndex(Elasticsearch(url, request_timeout=5, max_retries=1), index="outage",
                               model_id=MODEL)
    index.ensure_index()
    vectors = unit_vectors(20, seed=6)
    index.upsert(docs(vectors))
    index.refresh()
    control("stop")
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        index.upsert(docs(unit_vectors(3, seed=7)))
    with pytest.raises(BackendUnavailableError):
        index.search(SearchRequest(vector=vectors[0], mode="knn"))
    assert index.health()["ok"] is False
    control("start")
    # A restarted node answers before its shards are back (503 meanwhile, a transient error callers retry).
    requests.get(f"{url}/_cluster/health/outage", params={"wait_for_status": "yellow", "timeout": "60s"}, timeout=70)
    assert index.count() == 20
    assert index.search(SearchRequest(vector=vectors[0], mode="knn")).hits[0].key == "00000.jpg"


def test_a_query_of_many_vectors_is_one_search_of_at_most_four_knn_clauses(es_index):
    """An image query is itself plus ~70 regions: the cluster runs a few kNN searches, not one per region, and
    the documents the clauses find are ranked by their best cosine over every region, as the embedded index
    ranks all of its documents."""
    index = es_index()
    vectors = unit_vectors(300, seed=11)
    index.upsert(docs(vectors))
    index.refresh()
    queries = unit_vectors(71, seed=12)  # (71, 512)
    sent = []
    for method in ("search", "msearch"):
        real = getattr(index.client, method)
        setattr(index.client, method, lambda *a, _real=real, _name=method, **kw: sent.append((_name, kw)) or _real(*a, **kw))
    page = index.search(SearchRequest(vector=queries, page_size=300, mode="knn"))
    assert [name for name, _ in sent] == ["search"]
    assert 1 < len(sent[0][1]["knn"]) <= 4
    best = (vectors @ queries.T).max(axis=1)  # (300,)
    for hit in page.hits:  # scores are each document's best cosine over all 71 vectors
        assert hit.score == pytest.approx(float(best[int(hit.key[:5])]), abs=1e-5)
    assert [h.score for h in page.hits] == sorted((h.score for h in page.hits), reverse=True)
    assert page.total == len(page.hits) <= 4 * 100  # the candidates: the union of the clauses' k nearest
    nearest_to_itself = f"{int(np.argmax(vectors @ queries[0])):05d}.jpg"  # row 0, the image, is always a clause
    assert nearest_to_itself in {h.key for h in page.hits}


def test_the_api_key_is_read_from_secrets_manager_at_start_up(aws_env, moto_server):
    """IMGSEARCH_ES_API_KEY_SECRET: the key is fetched when the client is made, never held in the environment;
    a secret that cannot be read is the operator's to fix (ConfigError: retried, never a dead letter)."""
    import boto3

    from imgsearch.config import Settings
    from imgsearch.errors import ConfigError
    from imgsearch.index.es_client import make_client

    secret = boto3.client("secretsmanager").create_secret(Name=f"es-key-{uuid.uuid4().hex[:8]}",
                                                          SecretString="aWQ6a2V5\n")["ARN"]
    settings = Settings.from_env({"IMGSEARCH_ES_API_KEY_SECRET": secret, "IMGSEARCH_ES_URL": elasticsearch_url()})
    assert settings.es_api_key is None and "aWQ6a2V5" not in repr(settings)
    client = make_client(settings)
    assert client._headers["authorization"] == "ApiKey aWQ6a2V5"  # sent with every request
    assert client.cluster.health()["status"] in ("green", "yellow")  # this test server runs without security
    for missing in (secret + "-gone", "no-such-secret"):
        with pytest.raises(ConfigError, match="IMGSEARCH_ES_API_KEY_SECRET"):
            make_client(settings.replace(es_api_key_secret=missing))


def test_an_update_that_lost_a_race_is_not_an_error(monkeypatch):
    """Three workers re-deriving vectors after racing refits (bench/chaos.py --workers 3 found it): an update
    refused with 409 lost to a newer write of the same document, which wins; other refusals still count."""
    from imgsearch.errors import PermanentError
    from imgsearch.index import elasticsearch as es

    def bulk_answering(*statuses):
        failures = [{"update": {"_id": f"d{i}", "status": s, "error": {"reason": f"status {s}"}}}
                    for i, s in enumerate(statuses)]
        monkeypatch.setattr(es.helpers, "bulk", lambda *args, **kwargs: (0, failures))

    bulk_answering(409, 404, 409)
    es._bulk(None, [{}], "update", refresh=False)
    bulk_answering(409, 400)
    with pytest.raises(PermanentError, match="1 documents rejected"):
        es._bulk(None, [{}], "update", refresh=False)
    bulk_answering(409)
    with pytest.raises(PermanentError):  # a new document refused as a conflict is still a failure
        es._bulk(None, [{}], "index", refresh=False)
