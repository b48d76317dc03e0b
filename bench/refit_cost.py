"""What refitting the whitening costs as the index grows: read every document's descriptors, fit, store, and
re-derive every stored vector. Synthetic documents shaped like ours (a raw vector and 35 regions each, the
default recipe's count); the network is not involved.

    .venv/bin/python bench/refit_cost.py [--sizes 1000,5000] [--es-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from common import load, machine, table, write_json
from index_search import vectors
from imgsearch.config import Settings
from imgsearch.index.base import ImageDocument
from imgsearch.index.embedded import EmbeddedIndex
from imgsearch.pipeline import ImageSearch
from imgsearch.whitening import DescriptorSet

REGIONS = 35


class NoNetwork:
    """A refit never calls the network; this stands in for the embedder so none is loaded."""

    model_id = "bench-refit"
    dim = 512
    whitened = True


def fill(index, n: int) -> None:
    for start in range(0, n, 500):
        batch = []
        for i in range(start, min(n, start + 500)):
            regions = vectors(REGIONS, seed=i)
            raw = regions.sum(axis=0) / np.linalg.norm(regions.sum(axis=0))
            batch.append(ImageDocument(bucket="bench", key=f"{i:07d}", vector=raw, model_id=NoNetwork.model_id,
                                       descriptors=DescriptorSet(raw=raw, regions=regions).to_bytes(),
                                       whitening="none"))
        index.upsert(batch)
    index.refresh()


def timed_refit(index) -> dict:
    upkeep = ImageSearch(Settings.from_env({}), embedder=NoNetwork(), index=index).upkeep
    start = time.perf_counter()
    report = upkeep.refit()
    return {"refit_s": round(time.perf_counter() - start, 2), "rewhitened": report["rewhitened"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--es-url", default="http://127.0.0.1:9200", help="'' skips Elasticsearch")
    args = ap.parse_args()
    rows, before = [], load()
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            index = EmbeddedIndex(Path(tmp), model_id=NoNetwork.model_id)
            index.ensure_index()
            fill(index, n)
            rows.append({"backend": "embedded", "documents": n, **timed_refit(index)})
            index.close()
        if args.es_url:
            from elasticsearch import Elasticsearch

            from imgsearch.index.elasticsearch import ElasticsearchIndex

            index = ElasticsearchIndex(Elasticsearch(args.es_url, request_timeout=120),
                                       index=f"bench-refit-{uuid.uuid4().hex[:6]}", model_id=NoNetwork.model_id)
            index.ensure_index()
            try:
                fill(index, n)
                rows.append({"backend": "elasticsearch", "documents": n, **timed_refit(index)})
            finally:
                index.delete_index()
        print(rows[-1], flush=True)
    headers = list(rows[0])
    print(table(headers, [[row[h] for h in headers] for row in rows]))
    write_json("refit.json", {"machine": machine(), "load_before": before, "load_after": load(), "rows": rows})


if __name__ == "__main__":
    main()
