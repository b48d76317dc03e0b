"""Where a query's time goes: the steps of Searcher.search_image timed one by one, in one warm process, on the
embedded index of the 100 SMVS covers, with the E63 phone photos (re-ranking on, as `POST /search` runs it).

    eval "$(scripts/setup)"; .venv/bin/python bench/query_phases.py [--queries 50]

Prints the median and p95 of each step and of the whole `search_image` call measured separately (the steps run
one after the other here; the service may overlap some of them).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import COVERS, load, machine, p95, table
from imgsearch import local_features
from imgsearch.config import Settings
from imgsearch.embedder import DOCUMENT_LEVELS, QUERY_LEVELS, QUERY_SIZES, raw_vector, region_maxima
from imgsearch.images import decode_image
from imgsearch.index import SearchRequest
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "covers"
        shutil.copytree(COVERS / "Reference", folder)
        service = ImageSearch.open(Settings.from_env(data_dir=Path(scratch) / "data"))
        service.ingester.index_source(FolderStorage(folder))
        service.upkeep.after_ingest()
        searcher, embedder, settings = service.searcher, service.embedder, service.settings
        photos = [COVERS / "E63" / f"{i:03d}.jpg" for i in range(1, args.queries + 1)]
        for photo in photos[:3]:  # warm-up
            searcher.search_image(photo.read_bytes())
        steps: dict[str, list[float]] = {}

        def timed(name, work):
            started = time.perf_counter()
            result = work()
            steps.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            return result

        load_before = load()
        for photo in photos:
            data = photo.read_bytes()
            timed("whole search_image", lambda: searcher.search_image(data))
            image = timed("decode", lambda: decode_image(data, max_bytes=settings.max_image_bytes,
                                                         max_pixels=settings.max_pixels, draft_size=224).image)
            own = timed("network 224x224", lambda: embedder.feature_maps([image], "sq224")[0])
            close = timed(f"network longer side {QUERY_SIZES[0]}",
                          lambda: embedder.feature_maps([image], QUERY_SIZES[0])[0])
            # what Embedder.embed_query does after its two passes, then the whitening
            regions = timed("R-MAC pooling + whitening", lambda: service.whitening.current_whitening().apply(
                np.concatenate([raw_vector([region_maxima(own, DOCUMENT_LEVELS)])[None],
                                region_maxima(close, QUERY_LEVELS)])))
            query = timed("RootSIFT of the photo", lambda: local_features.extract(image))
            request = SearchRequest(vector=regions, min_score=None, page=1, page_size=settings.rerank_depth,
                                    mode=settings.search_mode, with_local_features=True)
            found = timed("index search (head of 40)", lambda: service.index.search(request))
            candidates = timed("decode stored features",
                               lambda: [local_features.decode(h.document.local_features) for h in found.hits])
            timed("verify (match + RANSAC)", lambda: local_features.verify(
                query, candidates, min_matches=settings.rerank_min_inliers))
        rows = [[name, f"{statistics.median(v):.0f}", f"{p95(v):.0f}"] for name, v in steps.items()]
        print(table(["step", "p50 ms", "p95 ms"], rows))
        print(f"load {load_before} -> {load()}")


if __name__ == "__main__":
    main()
