"""The search API over real HTTP: functions/search/app.py served by Chalice's LocalDevServer on 127.0.0.1, in a
thread, with an ImageSearch on the embedded backend that has indexed the seed folder with the real model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imgsearch.config import Settings


@pytest.fixture(scope="session")
def search_module():
    """functions/search/app.py, imported the way `imgsearch serve` imports it."""
    from imgsearch.local import load_function

    return load_function("search")


@pytest.fixture(scope="session")
def seed_dir(seed_paths) -> Path:
    return seed_paths[0].parent.resolve()


@pytest.fixture(scope="session")
def seed_service(tmp_path_factory, embedder, weights_path, seed_dir, seed_paths):
    """An ImageSearch over a fresh embedded index holding the seed images; the seed folder is the default bucket."""
    from imgsearch.pipeline import ImageSearch
    from imgsearch.storage import FolderStorage

    settings = Settings.from_env({}, data_dir=tmp_path_factory.mktemp("api-data"), weights=weights_path,
                                 bucket=str(seed_dir))
    service = ImageSearch.open(settings, embedder=embedder)
    report = service.ingester.index_source(FolderStorage(seed_dir))
    service.upkeep.after_ingest()
    assert report.indexed == len(seed_paths) and not report.failed, report.to_dict()
    yield service
    service.close()


@pytest.fixture(scope="session")
def api_server(search_module, seed_service):
    """The base URL of the app served over HTTP as `imgsearch serve` serves it (whatever service is in use at
    the time of each request)."""
    from imgsearch.local import make_api_server

    server = make_api_server(search_module.app, "127.0.0.1", 0,
                             max_body_bytes=search_module.inputs.max_body_bytes(seed_service.settings.max_image_bytes))
    thread = threading.Thread(target=server.server.serve_forever, name="search-api", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server.server_address[1]}"
    server.shutdown()
    server.server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def api(api_server, search_module, seed_service) -> str:
    """The base URL, serving seed_service; whatever a test swaps in with service.use is undone afterwards."""
    from imgsearch import service

    service.use(seed_service)
    yield api_server
    service.use(seed_service)


@pytest.fixture
def variant(search_module, seed_service):
    """Serve the seed index and model under other settings: variant(max_image_bytes=...), or another index."""
    from imgsearch import service
    from imgsearch.pipeline import ImageSearch

    def serve(*, index=None, **settings_changes):
        search = ImageSearch(seed_service.settings.replace(**settings_changes), embedder=seed_service.embedder,
                             index=index or seed_service.index)
        service.use(search)
        return search

    return serve



@pytest.fixture
def labelled_index(tmp_path, seed_service):
    """labelled_index({key: Labels}, copies={key: original key}): a copy of the seed index (vectors, whitening) in
    tmp_path whose images carry these labels (the others only their folder) and are marked as copies of those
    originals, to serve with variant(index=...)."""
    import dataclasses

    from imgsearch.index import doc_id
    from imgsearch.index.embedded import EmbeddedIndex
    from imgsearch.labels import Labels

    index = EmbeddedIndex(tmp_path, model_id=seed_service.index.model_id)

    def copy(labels_by_key: dict, *, copies: dict | None = None) -> EmbeddedIndex:
        index.ensure_index()
        if seed_service.index.whitenings.info():
            index.whitenings.save(seed_service.index.whitenings.load())
        for entry in seed_service.index.entries():
            document = seed_service.index.get(entry.doc_id)
            labels = labels_by_key.get(document.key) or Labels.of(document.key, {}, {})
            original = (copies or {}).get(document.key)
            index.upsert([dataclasses.replace(
                document, folder=labels.folder, tags=labels.tags, user_metadata=labels.user_metadata,
                duplicate_of=original and {"id": doc_id(document.bucket, original), "bucket": document.bucket,
                                           "key": original, "score": 0.9})])
        return index

    yield copy
    index.close()
