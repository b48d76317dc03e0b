"""Geometric re-ranking through the real pipeline: phone photos of DVD covers find their catalogue cover."""

from __future__ import annotations

import shutil

import pytest

from helpers import DVD_DIR, dvd_dir
from imgsearch.options import SearchOptions
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage


@pytest.fixture(scope="module")
def covers_index(embedder, tmp_path_factory):
    dvd_dir()
    folder = tmp_path_factory.mktemp("covers")
    for n in range(1, 11):
        shutil.copy(DVD_DIR / "Reference" / f"{n:03d}.jpg", folder / f"{n:03d}.jpg")
    from imgsearch.config import Settings

    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path_factory.mktemp("data")), embedder=embedder)
    assert search.ingester.index_source(FolderStorage(folder)).indexed == 10
    search.upkeep.after_ingest()
    return search.searcher


def test_rerank_puts_the_photographed_cover_first_and_says_so(covers_index):
    plain, reranked = 0, 0
    for n in range(1, 11):
        photo = (DVD_DIR / "E63" / f"{n:03d}.jpg").read_bytes()
        best = covers_index.search_image(photo, SearchOptions(rerank=False, page_size=3)).hits[0]
        plain += best.key == f"{n:03d}.jpg"
        top = covers_index.search_image(photo, SearchOptions(rerank=True, page_size=3)).hits
        assert top[0].key == f"{n:03d}.jpg" and top[0].verified is True and top[0].inliers >= 15
        assert all(hit.verified is False for hit in top[1:])  # no other cover is confirmed
        reranked += 1
    assert plain < reranked == 10


def test_paging_through_reranked_and_plain_results(covers_index):
    photo = (DVD_DIR / "E63" / "001.jpg").read_bytes()
    page = covers_index.search_image(photo, SearchOptions(rerank=True, page=2, page_size=25))
    assert page.hits == () and page.total == 10
    second = covers_index.search_image(photo, SearchOptions(rerank=True, page=2, page_size=3)).hits
    assert len(second) == 3 and all(h.verified is False for h in second)


def test_a_large_file_reports_its_own_size_and_outline(embedder, tmp_path):
    """A large JPEG is decoded smaller (the decoder skips resolution the network never sees), yet its hit gives
    the file's width and height, upright, and the match outline lies in the file's pixels: the outline found in
    the same cover at 500x500, scaled."""
    from PIL import Image

    from imgsearch.config import Settings

    cover = Image.open(DVD_DIR / "Reference" / "001.jpg").convert("RGB")  # 500x500
    folder = tmp_path / "covers"
    folder.mkdir()
    cover.save(folder / "small.jpg", quality=95)
    cover.resize((2000, 2000), Image.Resampling.LANCZOS).save(folder / "large.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: "rotate 90 degrees clockwise to display", upright 2000x1500
    cover.resize((2000, 1500), Image.Resampling.LANCZOS).transpose(Image.Transpose.ROTATE_90).save(
        folder / "turned.jpg", quality=95, exif=exif.tobytes())
    search = ImageSearch.open(Settings.from_env({}, data_dir=tmp_path / "data"), embedder=embedder)
    assert search.ingester.index_source(FolderStorage(folder)).indexed == 3

    photo = (DVD_DIR / "E63" / "001.jpg").read_bytes()
    hits = {hit.key: hit for hit in search.searcher.search_image(photo, SearchOptions(page_size=3)).hits}
    assert {key: (hit.width, hit.height, hit.verified) for key, hit in hits.items()} == {
        "small.jpg": (500, 500, True), "large.jpg": (2000, 2000, True), "turned.jpg": (2000, 1500, True)}
    small = hits["small.jpg"].match_polygon
    for key, (sx, sy) in {"large.jpg": (4, 4), "turned.jpg": (4, 3)}.items():
        for (x, y), (x0, y0) in zip(hits[key].match_polygon, small):
            assert abs(x - x0 * sx) < 60 and abs(y - y0 * sy) < 60, (key, hits[key].match_polygon, small)
    search.close()
