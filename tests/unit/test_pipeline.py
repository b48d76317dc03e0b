"""Pipeline decisions with a small fake embedder (unit tests: the model's meaning is tested elsewhere)."""

from __future__ import annotations

import pytest

from imgsearch.config import Settings
from imgsearch.errors import BadImageError, ConfigError, NotFoundError
from imgsearch.index import doc_id
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage

from helpers import ColourEmbedder, png


@pytest.fixture
def world(tmp_path):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    embedder = ColourEmbedder()
    search = ImageSearch(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=embedder)
    search.index.ensure_index()
    search.use_storage(folder)
    return folder, search, embedder


def test_sync_object_follows_the_bucket(world):
    folder, search, embedder = world
    folder.put("red.png", png((255, 0, 0)))
    assert search.sync_object(folder, "red.png").action == "indexed"
    assert search.sync_object(folder, "red.png").action == "unchanged" and embedder.embedded == 1
    assert search.index_source(folder).unchanged == 1 and embedder.embedded == 1
    assert search.index_source(folder, force=True).indexed == 1 and embedder.embedded == 2
    (folder.root / "red.png").unlink()
    assert search.sync_object(folder, "red.png").action == "deleted"
    assert search.sync_object(folder, "red.png").action == "absent"


def test_overwriting_an_image_with_garbage_drops_its_stale_vector_only(world):
    folder, search, _ = world
    folder.put("a.png", png((255, 0, 0)))
    folder.put("b.png", png((0, 0, 255)))
    search.index_source(folder)
    folder.put("a.png", b"garbage")
    with pytest.raises(BadImageError):
        search.sync_object(folder, "a.png")
    assert search.index.get(doc_id(folder.bucket, "a.png")) is None
    assert search.index.get(doc_id(folder.bucket, "b.png")) is not None


def test_index_source_reports_failures_and_prunes(world):
    folder, search, _ = world
    for name, colour in (("r.png", (255, 0, 0)), ("g.png", (0, 255, 0))):
        folder.put(name, png(colour))
    folder.put("empty.png", b"")
    report = search.index_source(folder)
    assert (report.indexed, [k for k, _ in report.failed]) == (2, ["empty.png"])
    (folder.root / "g.png").unlink()
    assert search.index_source(folder, prune=True).deleted == 1


def test_search_and_similar(world):
    folder, search, _ = world
    for name, colour in (("red.png", (250, 0, 0)), ("pink.png", (250, 30, 30)), ("blue.png", (0, 0, 250))):
        folder.put(name, png(colour))
    search.index_source(folder)
    results = search.search_image(png((255, 0, 0)), page_size=2).to_dict()
    assert [h["key"] for h in results["hits"]] == ["red.png", "pink.png"] and results["total"] == 3
    assert results["hits"][0]["url"].startswith("file://")
    similar = search.similar_to(folder.bucket, "red.png").to_dict()
    assert "red.png" not in [h["key"] for h in similar["hits"]] and similar["hits"][0]["key"] == "pink.png"
    with pytest.raises(NotFoundError):
        search.similar_to(folder.bucket, "nope.png")


def test_keys_cannot_escape_a_folder(world):
    folder, search, _ = world
    with pytest.raises(NotFoundError):
        folder.read("../outside.png", max_bytes=100)


def test_settings_come_from_the_environment_and_are_checked():
    settings = Settings.from_env({"IMGSEARCH_BACKEND": "elasticsearch", "IMGSEARCH_ES_URL": "http://a:1, http://b:2/",
                                  "IMGSEARCH_MAX_PIXELS": "1000", "IMGSEARCH_ES_VERIFY_CERTS": "false"})
    assert settings.es_urls == ("http://a:1", "http://b:2") and settings.max_pixels == 1000
    assert settings.es_verify_certs is False
    assert Settings.from_env({"IMGSEARCH_BACKEND": "elasticsearch"}, backend="embedded").backend == "embedded"
    for bad in ({"IMGSEARCH_BACKEND": "mysql"}, {"IMGSEARCH_BATCH_SIZE": "many"}, {"IMGSEARCH_BATCH_SIZE": "0"},
                {"IMGSEARCH_ES_VECTOR_INDEX": "bbq_hnsw"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
