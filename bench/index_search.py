"""Index benchmarks: bulk indexing rate, size on disk, query latency and recall@10 vs collection size.

Synthetic vectors shaped like ours (512-d, non-negative, unit length: abs(normal)**3, normalised, seeded);
queries are fresh draws from the same distribution; ground truth is exact top-10 by numpy dot product.
Backends: the embedded index (exact), Elasticsearch on a `flat` field (library mode "exact", and mode "knn",
both brute force), Elasticsearch on `hnsw` (mode "knn", num_candidates 100, plus others at the largest size).
Searches go through the library (SearchRequest -> backend.search), so latency is end to end from Python.

    .venv/bin/python bench/index_search.py [--sizes 1000,10000,100000] [--queries 100] [--es-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import load, machine, table, write_json
from imgsearch.index.base import ImageDocument, SearchRequest
from imgsearch.index.embedded import EmbeddedIndex

MODEL_ID = "bench-synthetic"
K = 10


def vectors(n: int, seed: int) -> np.ndarray:
    x = np.abs(np.random.default_rng(seed).standard_normal((n, 512), dtype=np.float32)) ** 3  # (n, 512)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def documents(matrix: np.ndarray, start: int) -> list[ImageDocument]:
    return [ImageDocument(bucket="bench", key=f"v{start + i:07d}", vector=v, model_id=MODEL_ID)
            for i, v in enumerate(matrix)]


def bulk(index, matrix: np.ndarray, chunk: int) -> float:
    """Upsert every vector in chunks; returns docs/s (including the final refresh)."""
    start = time.perf_counter()
    for i in range(0, len(matrix), chunk):
        index.upsert(documents(matrix[i:i + chunk], i))
    index.refresh()
    return len(matrix) / (time.perf_counter() - start)


def measure(index, queries: np.ndarray, truth: np.ndarray, mode: str) -> dict:
    """p50/p95 latency (ms) and recall@10 over the queries, after 10 warm-up searches."""
    for q in queries[:10]:
        index.search(SearchRequest(vector=q, page_size=K, mode=mode))
    ms, recall = [], []
    for q, true in zip(queries, truth):
        start = time.perf_counter()
        page = index.search(SearchRequest(vector=q, page_size=K, mode=mode))
        ms.append(1000 * (time.perf_counter() - start))
        found = {int(h.key[1:]) for h in page.hits}
        recall.append(len(found & set(true.tolist())) / K)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "recall_at_10": round(float(np.mean(recall)), 4)}


def es_store_bytes(client, name: str) -> tuple[int, float]:
    """Refresh, force merge to one segment (timed), then the primary store size in bytes."""
    client.indices.refresh(index=name)
    start = time.perf_counter()
    client.options(request_timeout=1800).indices.forcemerge(index=name, max_num_segments=1)
    merge_s = time.perf_counter() - start
    client.indices.refresh(index=name)
    stats = client.indices.stats(index=name, metric="store")
    return stats["_all"]["primaries"]["store"]["size_in_bytes"], merge_s


def run_size(n: int, args, client, rows: list[dict]) -> None:
    data, queries = vectors(n, args.seed), vectors(args.queries, args.seed + 1)
    truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :K]  # (q, 10) exact ground truth

    def record(backend: str, mode: str, **values):
        row = {"n": n, "backend": backend, "mode": mode, **values}
        rows.append(row)
        print(f"  {row}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        index = EmbeddedIndex(tmp, model_id=MODEL_ID)
        index.ensure_index()
        load_before = load()
        rate = bulk(index, data, args.chunk)
        index.close()  # checkpoints the WAL into the file
        size = sum(p.stat().st_size for p in Path(tmp).glob("index.sqlite3*"))
        index = EmbeddedIndex(tmp, model_id=MODEL_ID)
        record("embedded", "exact", docs_per_s=round(rate), disk_mib=round(size / 2**20, 1),
               **measure(index, queries, truth, "exact"), load=f"{load_before} -> {load()}")
        index.close()
    if client is None:
        return

    from imgsearch.index.elasticsearch import ElasticsearchIndex

    for kind in ("flat", "hnsw"):
        name = f"bench-{kind}-{n}"
        client.indices.delete(index=name, ignore_unavailable=True)
        index = ElasticsearchIndex(client, index=name, model_id=MODEL_ID, vector_index=kind)
        try:
            index.ensure_index()
            load_before = load()
            rate = bulk(index, data, args.chunk)
            size, merge_s = es_store_bytes(client, name)
            common = dict(docs_per_s=round(rate), disk_mib=round(size / 2**20, 1), forcemerge_s=round(merge_s, 1))
            if kind == "flat":
                record("es-flat", "exact", **common, **measure(index, queries, truth, "exact"),
                       load=f"{load_before} -> {load()}")
                record("es-flat", "knn (k=100)", **measure(index, queries, truth, "knn"), load=load())
            else:
                candidates = [100] + (args.extra_candidates if n == max(args.sizes) else [])
                for c in candidates:
                    index.knn_candidates = c
                    record("es-hnsw", f"knn nc={c}", **(common if c == 100 else {}),
                           **measure(index, queries, truth, "knn"), load=f"{load_before} -> {load()}")
        finally:
            client.indices.delete(index=name, ignore_unavailable=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=1000, help="documents per upsert call")
    ap.add_argument("--extra-candidates", default="50,200", type=lambda s: [int(x) for x in s.split(",") if x],
                    help="further hnsw num_candidates, tried at the largest size only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--es-url", default="http://127.0.0.1:9200", help="'' skips Elasticsearch")
    args = ap.parse_args()

    client = None
    if args.es_url:
        from imgsearch.config import Settings
        from imgsearch.index.elasticsearch import make_client

        client = make_client(Settings(es_urls=(args.es_url,), es_timeout=300))
        version = client.nodes.info(node_id="_local", filter_path="nodes.*.version").body
        es_version = next(iter(version["nodes"].values()))["version"]
    info = machine()
    rows: list[dict] = []
    started = time.perf_counter()
    for n in args.sizes:
        print(f"n={n}", flush=True)
        run_size(n, args, client, rows)
    info["loadavg_after"] = load()
    path = write_json("index.json", {"machine": info, "elasticsearch": es_version if client else None,
                                     "queries": args.queries, "k": K, "seed": args.seed,
                                     "total_s": round(time.perf_counter() - started), "rows": rows})

    print(f"\nMachine: {info['cpu']}, {info['nproc']} cores, {info['mem_gib']} GiB; "
          f"load {info['loadavg']} before, {info['loadavg_after']} after (shared machine)\n")
    cols = ["n", "backend", "mode", "p50_ms", "p95_ms", "recall_at_10", "docs_per_s", "disk_mib", "forcemerge_s"]
    print(table(cols, [[r.get(c, "") for c in cols] for r in rows]))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
