"""What geometric re-ranking adds to a query: the same queries, same process, with and without it.

    .venv/bin/python bench/rerank_cost.py [--queries 30]

Indexes the SMVS DVD covers (Reference/) into a temporary embedded index, then times `search_image` on E63
photos with rerank off and on (alternating, after a warm-up). Prints p50/p95 of both and of the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import p95
from imgsearch.config import Settings
from imgsearch.options import SearchOptions
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage

DATASET = Path(__file__).resolve().parents[2] / "shared/datasets/smvs_dvd_covers"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    service = ImageSearch.open(Settings.from_env(data_dir=Path(tempfile.mkdtemp())))
    service.ingester.index_source(FolderStorage(DATASET / "Reference"))
    service.upkeep.after_ingest()
    search = service.searcher
    photos = [p.read_bytes() for p in sorted((DATASET / "E63").glob("*.jpg"))[: args.queries]]
    search.search_image(photos[0], SearchOptions(rerank=True))  # warm-up: model, OpenCV
    timings = {False: [], True: []}
    for photo in photos:
        for rerank in (False, True):
            started = time.perf_counter()
            search.search_image(photo, SearchOptions(rerank=rerank))
            timings[rerank].append((time.perf_counter() - started) * 1000)
    added = [on - off for off, on in zip(timings[False], timings[True])]
    print(json.dumps({
        "queries": len(photos), "loadavg": open("/proc/loadavg").read().split()[:3],
        "plain_ms_p50_p95": [round(statistics.median(timings[False])), round(p95(timings[False]))],
        "reranked_ms_p50_p95": [round(statistics.median(timings[True])), round(p95(timings[True]))],
        "added_ms_p50_p95": [round(statistics.median(added)), round(p95(added))],
    }, indent=2))


if __name__ == "__main__":
    main()
