"""Copies flagged at ingest, on each backend with the real model: a re-encoded or cropped copy names its
original, a copy of a copy the first one, distinct images and a re-upload of the same key name nothing;
GET /duplicates' groups and collapse=true follow."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from helpers import reencoded_copy
from imgsearch.index import doc_id
from imgsearch.options import SearchOptions
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage


@pytest.fixture
def world(index_settings, embedder, tmp_path):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    search = ImageSearch.open(index_settings.replace(bucket=folder.bucket), embedder=embedder)
    search.storages.add(folder)
    yield folder, search
    search.close()


def test_copies_are_flagged_grouped_and_collapsed(world, seed_paths, tmp_path):
    folder, search = world
    originals = [f"covers/{path.name}" for path in seed_paths]
    for key, path in zip(originals, seed_paths):
        folder.put(key, path.read_bytes())
    search.ingester.index_source(folder)
    assert not list(search.index.copies())  # distinct images are no copies

    first = reencoded_copy(seed_paths[0])  # re-encoded, halved, 5% cropped
    folder.put("copies/first.jpg", first)
    folder.put("copies/second-cropped.jpg", reencoded_copy(seed_paths[1], crop=0.15, scale=0.7))
    search.ingester.index_source(folder)
    folder.put("copies/copy-of-first.jpg", reencoded_copy_bytes(first))
    search.ingester.index_source(folder)

    def original_of(key):
        found = search.index.get(doc_id(folder.bucket, key), with_vector=False).duplicate_of
        return found and found["key"]

    assert original_of("copies/first.jpg") == originals[0]
    assert original_of("copies/second-cropped.jpg") == originals[1]
    assert original_of("copies/copy-of-first.jpg") == originals[0]  # the group's first, not the copy it matched
    assert search.index.get(doc_id(folder.bucket, "copies/first.jpg")).duplicate_of["score"] > 0.8
    assert all(original_of(key) is None for key in originals)

    # An original and its copy uploaded together (one batch, neither searchable yet): the later one is flagged.
    # The original is a mirror image of a seed: no copy of it (a mirror is no zoom and shift).
    mirrored = tmp_path / "mirrored.jpg"
    with Image.open(seed_paths[3]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored, quality=95)
    folder.put("batch/a-mirrored.jpg", mirrored.read_bytes())
    folder.put("batch/b-copy.jpg", reencoded_copy(mirrored))
    search.ingester.index_source(folder)
    assert original_of("batch/a-mirrored.jpg") is None
    assert original_of("batch/b-copy.jpg") == "batch/a-mirrored.jpg"

    # A new version under the same key is no copy of its former self.
    folder.put(originals[2], reencoded_copy(seed_paths[2]))
    assert search.ingester.sync_object(folder, originals[2]).action == "indexed"
    assert original_of(originals[2]) is None

    groups = search.searcher.duplicate_groups()
    assert groups["total"] == 3 and groups["page"] == 1
    biggest = groups["groups"][0]
    assert biggest["original"]["key"] == originals[0] and biggest["original"]["indexed"]
    assert sorted(c["key"] for c in biggest["copies"]) == ["copies/copy-of-first.jpg", "copies/first.jpg"]
    assert biggest["original"]["url"].startswith("file://")

    everything = search.searcher.search_image(first, SearchOptions(page_size=50, rerank=False))
    collapsed = search.searcher.search_image(first, SearchOptions(page_size=50, rerank=False, collapse=True))
    group_of_first = {originals[0], "copies/first.jpg", "copies/copy-of-first.jpg"}
    assert len(group_of_first & {hit.key for hit in collapsed.hits}) == 1
    assert collapsed.hits[0].key in group_of_first
    assert collapsed.total == everything.total - 4 == len(collapsed.hits)  # three groups, four copies fewer

    # The original deleted: its copies stay grouped under it, marked as no longer indexed.
    (folder.root / originals[0]).unlink()
    search.ingester.sync_object(folder, originals[0])
    biggest = search.searcher.duplicate_groups()["groups"][0]
    assert biggest["original"]["key"] == originals[0] and not biggest["original"]["indexed"]


def reencoded_copy_bytes(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=80)
        return out.getvalue()


def test_flagging_can_be_switched_off(index_settings, embedder, seed_paths, tmp_path):
    folder = FolderStorage(tmp_path / "bucket")
    folder.root.mkdir()
    search = ImageSearch.open(index_settings.replace(flag_duplicates=False), embedder=embedder)
    folder.put("original.jpg", seed_paths[0].read_bytes())
    search.ingester.index_source(folder)
    folder.put("copy.jpg", reencoded_copy(seed_paths[0]))
    search.ingester.index_source(folder)
    assert not list(search.index.copies())
    search.close()
