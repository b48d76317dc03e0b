from __future__ import annotations

import uuid

import pytest

from servers import MotoServer, drop_elasticsearch_index, elasticsearch_url


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Point boto3 (ours and the handler's) at moto's server."""
    for name, value in {"AWS_ENDPOINT_URL": moto_server.url, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return moto_server.url


@pytest.fixture(params=["embedded", "elasticsearch"])
def index_settings(request, settings):
    """Settings for each backend; the Elasticsearch index is a fresh one, deleted afterwards."""
    if request.param == "embedded":
        yield settings
        return
    index = f"test-{uuid.uuid4().hex[:12]}"
    url = elasticsearch_url()
    yield settings.replace(backend="elasticsearch", es_urls=(url,), es_index=index)
    drop_elasticsearch_index(url, index)  # and its <index>_whitening
