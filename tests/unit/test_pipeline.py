"""Ingest, search and whitening upkeep with a small fake embedder (unit tests: the model's meaning is tested
elsewhere). Where the whitening matters, a test runs ingest and then the upkeep, as the extract handler does."""

from __future__ import annotations

import pytest

from imgsearch.config import Settings
from imgsearch.errors import BadImageError, ConfigError, NotFoundError
from imgsearch.index import doc_id
from imgsearch.options import SearchOptions
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage

from helpers import ColourEmbedder, WhitenedColourEmbedder, distinct_colours, png


@pytest.fixture
def world(tmp_path):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    embedder = ColourEmbedder()
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=embedder)
    search.storages.add(folder)
    return folder, search, embedder


def sync(search: ImageSearch, folder: FolderStorage, key: str):
    """What the extract handler does with an event: ingest the object, then the whitening's upkeep."""
    outcome = search.ingester.sync_object(folder, key)
    search.upkeep.after_ingest()
    return outcome


def test_sync_object_follows_the_bucket(world):
    folder, search, embedder = world
    folder.put("red.png", png((255, 0, 0)))
    assert sync(search, folder, "red.png").action == "indexed"
    assert sync(search, folder, "red.png").action == "unchanged" and embedder.embedded == 1
    assert search.ingester.index_source(folder).unchanged == 1 and embedder.embedded == 1
    assert search.ingester.index_source(folder, force=True).indexed == 1 and embedder.embedded == 2
    (folder.root / "red.png").unlink()
    assert sync(search, folder, "red.png").action == "deleted"
    assert sync(search, folder, "red.png").action == "absent"


def test_documents_indexed_before_labels_were_kept_get_them_from_the_next_sync(world):
    """An index of an older version (no label columns): opening it adds them; sync labels the old documents
    without embedding them again, and the folder filter finds them."""
    from imgsearch.labels import parse_filters

    folder, search, embedder = world
    folder.put("cats/red.png", png((255, 0, 0)))
    search.ingester.index_source(folder)
    db = search.index._conn()
    for column in ("folder", "tags", "user_metadata"):
        db.execute(f"ALTER TABLE documents DROP COLUMN {column}")
    search.index.ensure_index()  # what opening the index does
    report = search.ingester.index_source(folder)
    assert (report.relabelled, report.unchanged, embedder.embedded) == (1, 0, 1)
    assert search.ingester.index_source(folder).unchanged == 1
    hits = search.searcher.search_image(png((255, 0, 0)), SearchOptions(filters=parse_filters("folder=cats/"))).hits
    assert [hit.key for hit in hits] == ["cats/red.png"] and hits[0].folder == "cats/"


def test_a_tag_change_concerns_indexed_images_only(world):
    """A bad file's tag change is not rejected a second time; an indexed image's is looked at (labels only)."""
    from imgsearch.events import ObjectChange

    folder, search, embedder = world
    folder.put("bad.png", b"garbage")
    folder.put("red.png", png((255, 0, 0)))
    sync(search, folder, "red.png")

    def tagged(key):
        return search.ingester.apply_change(ObjectChange(bucket=folder.bucket, key=key, event_name="ObjectTagging:Put"))

    assert tagged("bad.png").action == "not_indexed"
    assert tagged("red.png").action == "unchanged" and embedder.embedded == 1


def test_overwriting_an_image_with_garbage_drops_its_stale_vector_only(world):
    folder, search, _ = world
    folder.put("a.png", png((255, 0, 0)))
    folder.put("b.png", png((0, 0, 255)))
    search.ingester.index_source(folder)
    folder.put("a.png", b"garbage")
    with pytest.raises(BadImageError):
        sync(search, folder, "a.png")
    assert search.index.get(doc_id(folder.bucket, "a.png")) is None
    assert search.index.get(doc_id(folder.bucket, "b.png")) is not None


def test_index_source_reports_failures_and_prunes(world):
    folder, search, _ = world
    for name, colour in (("r.png", (255, 0, 0)), ("g.png", (0, 255, 0))):
        folder.put(name, png(colour))
    folder.put("empty.png", b"")
    report = search.ingester.index_source(folder)
    assert (report.indexed, [k for k, _ in report.failed]) == (2, ["empty.png"])
    (folder.root / "g.png").unlink()
    assert search.ingester.index_source(folder, prune=True).deleted == 1


def test_search_and_similar(world):
    folder, search, _ = world
    for name, colour in (("red.png", (250, 0, 0)), ("pink.png", (250, 30, 30)), ("blue.png", (0, 0, 250))):
        folder.put(name, png(colour))
    search.ingester.index_source(folder)
    results = search.searcher.search_image(png((255, 0, 0)), SearchOptions(page_size=2)).to_dict()
    assert [h["key"] for h in results["hits"]] == ["red.png", "pink.png"] and results["total"] == 3
    assert results["hits"][0]["url"].startswith("file://")
    similar = search.searcher.similar_to(folder.bucket, "red.png").to_dict()
    assert "red.png" not in [h["key"] for h in similar["hits"]] and similar["hits"][0]["key"] == "pink.png"
    with pytest.raises(NotFoundError):
        search.searcher.similar_to(folder.bucket, "nope.png")


def test_a_verified_hit_says_where_it_matched_in_its_own_pixels(world):
    """A 1280 x 960 picture (its features found at half size) and a small copy of it as the query: the match
    polygon covers the picture in its own pixels; the unverified hit has none, nor has any hit without re-ranking."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    folder, search, _ = world
    rng = np.random.default_rng(3)
    picture = Image.new("RGB", (1280, 960), (235, 235, 225))
    draw = ImageDraw.Draw(picture)
    for x, y, w, h, r, g, b in rng.integers(0, [1240, 920, 120, 120, 256, 256, 256], (300, 7)).tolist():
        draw.rectangle([x, y, x + w // 3 + 8, y + h // 3 + 8], fill=(r, g, b))
    for name, image in (("big.png", picture), ("plain.png", Image.new("RGB", (64, 64), (200, 30, 30)))):
        out = io.BytesIO()
        image.save(out, format="PNG")
        folder.put(name, out.getvalue())
    search.ingester.index_source(folder)
    query = io.BytesIO()
    picture.resize((480, 360), Image.LANCZOS).save(query, format="JPEG", quality=90)
    hits = {hit.key: hit for hit in search.searcher.search_image(query.getvalue()).hits}
    big = hits["big.png"]
    assert big.verified and (big.width, big.height) == (1280, 960)
    corners = np.array(big.match_polygon)  # (4, 2) clockwise from the top left, as the query's box
    np.testing.assert_allclose(corners, [[0, 0], [1280, 0], [1280, 960], [0, 960]], atol=0.08 * 1280)
    assert hits["plain.png"].match_polygon is None and not hits["plain.png"].verified
    assert big.to_dict()["match_polygon"] == big.match_polygon
    plain = search.searcher.search_image(query.getvalue(), SearchOptions(rerank=False)).hits
    assert {hit.match_polygon for hit in plain} == {None}


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


def test_the_whitening_is_fitted_as_the_index_grows_and_every_vector_follows(tmp_path):
    from imgsearch import whitening

    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=WhitenedColourEmbedder())
    fitted = []
    for i, colour in enumerate(distinct_colours(whitening.MIN_IMAGES + 5)):  # one event after another, as from a bucket
        folder.put(f"{i:02d}.png", png(colour))
        sync(search, folder, f"{i:02d}.png")
        fitted.append(search.index.whitenings.info())
    assert fitted[whitening.MIN_IMAGES - 2] is None  # too few images to learn from: raw vectors
    assert fitted[whitening.MIN_IMAGES - 1][1] == whitening.MIN_IMAGES  # first fit, on every image so far
    assert fitted[-1][1] == 20 == int(whitening.GROWTH * whitening.MIN_IMAGES)  # refitted once grown by 25%
    current = search.index.whitenings.info()[0]
    assert search.index.count(stale_for=current) == 0  # no vector left from an older whitening
    for i, colour in enumerate(distinct_colours(whitening.MIN_IMAGES + 5)):
        best = search.searcher.search_image(png(colour), SearchOptions(page_size=1, rerank=False)).hits[0]
        assert best.key == f"{i:02d}.png" and best.score == pytest.approx(1.0, abs=1e-3)


def test_a_refit_elsewhere_while_an_image_is_embedded_is_caught_up(tmp_path, monkeypatch):
    """Two processes on one index (two Lambdas): the second refits between the first's embedding and its write."""
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    first, second = (ImageSearch(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=WhitenedColourEmbedder())
                     for _ in range(2))
    first.index.ensure_index()
    for i, colour in enumerate(distinct_colours(18)):
        folder.put(f"{i:02d}.png", png(colour))
    first.ingester.index_source(folder)
    first.upkeep.after_ingest()
    folder.put("extra.png", png((9, 9, 9)))
    sync(second, folder, "extra.png")  # 19 images: not yet time for a refit by the policy
    old = first.whitening.current_whitening().id
    write = first.index.upsert

    def write_after_a_refit_elsewhere(documents):
        second.upkeep.refit()
        write(documents)

    monkeypatch.setattr(first.index, "upsert", write_after_a_refit_elsewhere)
    folder.put("late.png", png((1, 2, 3)))
    sync(first, folder, "late.png")
    current = first.index.whitenings.info()[0]
    assert current != old and first.index.get(doc_id(folder.bucket, "late.png")).whitening == current
    assert first.index.count(stale_for=current) == 0 and first.index.count() == 20


class BlankRefusingEmbedder(ColourEmbedder):
    """Like the real embedder on an image without features: refuses the whole batch it is in."""

    def describe(self, images):
        if any(image.getbbox() is None for image in images):  # all black
            raise BadImageError("the image produced no features at all (a blank image?)")
        return super().describe(images)


def test_one_featureless_image_does_not_spoil_its_batch(tmp_path):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=BlankRefusingEmbedder())
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 0)), ("c.png", (0, 0, 255))):
        folder.put(name, png(colour))
    report = search.ingester.index_source(folder)
    assert report.indexed == 2 and [key for key, _ in report.failed] == ["b.png"]
    assert "no features" in report.failed[0][1] and search.index.count() == 2


def test_a_refit_that_failed_is_finished_by_the_retried_event(tmp_path, monkeypatch):
    from imgsearch.errors import BackendUnavailableError
    from imgsearch.whitening import MIN_IMAGES

    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=WhitenedColourEmbedder())
    for i, colour in enumerate(distinct_colours(MIN_IMAGES)):
        folder.put(f"{i:02d}.png", png(colour))
    for i in range(MIN_IMAGES - 1):
        sync(search, folder, f"{i:02d}.png")
    save = search.index.whitenings.save

    def unreachable(whitening):
        raise BackendUnavailableError("index server unreachable (test)")

    monkeypatch.setattr(search.index.whitenings, "save", unreachable)
    last = f"{MIN_IMAGES - 1:02d}.png"
    with pytest.raises(BackendUnavailableError):  # the image is stored; the refit it triggers is not: retry later
        sync(search, folder, last)
    assert search.index.whitenings.info() is None and search.index.count() == MIN_IMAGES
    monkeypatch.setattr(search.index.whitenings, "save", save)
    assert sync(search, folder, last).action == "unchanged"  # the queue's retry
    whitening_id, fitted_on = search.index.whitenings.info()
    assert fitted_on == MIN_IMAGES and search.index.count(stale_for=whitening_id) == 0
