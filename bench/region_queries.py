"""What a real query costs the index: one query is its own vector plus ~140 region vectors (the default
recipe), and a document scores its best cosine over them. Measures that on synthetic vectors shaped like ours.

Backends: the embedded index (one (n x 512) . (512 x R) product), Elasticsearch kNN over hnsw and over a flat
field (brute force, exact), each an _msearch of R requests merged by best score. Recall@10 is against the exact
best-of scores.

    .venv/bin/python bench/region_queries.py [--documents 10000] [--vectors 141] [--queries 20] [--es-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from common import load, machine, table, write_json
from index_search import K, MODEL_ID, bulk, vectors
from imgsearch.index.base import SearchRequest
from imgsearch.index.embedded import EmbeddedIndex


def measure(index, queries: list[np.ndarray], truth: list[set[int]], mode: str) -> dict:
    index.search(SearchRequest(vector=queries[0], page_size=K, mode=mode))  # warm-up
    ms, recall = [], []
    for query, true in zip(queries, truth):
        start = time.perf_counter()
        page = index.search(SearchRequest(vector=query, page_size=K, mode=mode))
        ms.append(1000 * (time.perf_counter() - start))
        recall.append(len({int(h.key[1:]) for h in page.hits} & true) / K)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "recall_at_10": round(float(np.mean(recall)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=10_000)
    ap.add_argument("--vectors", type=int, default=141, help="query vectors per query")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--es-url", default="http://127.0.0.1:9200", help="'' skips Elasticsearch")
    args = ap.parse_args()
    matrix = vectors(args.documents, seed=0)
    queries = [vectors(args.vectors, seed=1000 + i) for i in range(args.queries)]
    truth = [set(np.argsort(-(matrix @ q.T).max(axis=1))[:K].tolist()) for q in queries]
    rows = []
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        index = EmbeddedIndex(Path(tmp), model_id=MODEL_ID)
        index.ensure_index()
        bulk(index, matrix, 1000)
        rows.append({"backend": "embedded", "mode": "exact", **measure(index, queries, truth, "exact")})
        index.close()
    if args.es_url:
        from elasticsearch import Elasticsearch

        from imgsearch.index.elasticsearch import ElasticsearchIndex

        for vector_index in ("hnsw", "flat"):  # kNN over flat is brute force: exact, and needs no painless
            index = ElasticsearchIndex(Elasticsearch(args.es_url, request_timeout=120), vector_index=vector_index,
                                       index=f"bench-regions-{uuid.uuid4().hex[:6]}", model_id=MODEL_ID)
            index.ensure_index()
            try:
                bulk(index, matrix, 1000)
                index.client.indices.forcemerge(index=index.index, max_num_segments=1)
                rows.append({"backend": f"elasticsearch {vector_index}", "mode": "knn",
                             **measure(index, queries, truth, "knn")})
            finally:
                index.delete_index()
    for row in rows:
        row.update(documents=args.documents, vectors_per_query=args.vectors)
    headers = list(rows[0])
    print(table(headers, [[row[h] for h in headers] for row in rows]))
    write_json("region_queries.json", {"machine": machine(), "load_before": before, "load_after": load(), "rows": rows})


if __name__ == "__main__":
    main()
