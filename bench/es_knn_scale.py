"""Elasticsearch kNN at scale: `hnsw` against `int8_hnsw` on the same synthetic vectors, growing in steps.

Synthetic vectors shaped like ours (`index_search.vectors`: 512-d, abs(normal)**3, unit length, seeded); the
collection at each size is a prefix of the next one, so every step adds the new vectors to the same two
indices (one per `index_options.type`, m 16, ef_construction 100, similarity cosine like the library's
mapping, 1 shard, 0 replicas, `refresh_interval: -1` while loading, the vector excluded from `_source`).
At each size, for each index:

- bulk rate of the step (`helpers.parallel_bulk`, 2 threads, chunks of 500, JSON floats; final refresh
  included), with the server's and this process's CPU seconds for it;
- flush, wait until the shard's retention lease has passed every operation (Elasticsearch keeps the
  original source, vector included, as `_recovery_source` for operations still inside the lease; a merge
  after that drops it), then force merge to 1 segment (timed); then store size (`_stats/store`), the size of
  each Lucene file kind (`_stats/segments?include_segment_file_sizes`; `index.compound_format: false` so
  that vec/vex/veq stay separate files) and the vector field's share (`_disk_usage`);
- server-side latency (`took`, whole ms) p50/p95 over the queries after warm-up, k = 10, at num_candidates
  100, 200 and, while recall@10 < the target, doubled (up to --max-candidates); for `int8_hnsw` first
  without rescoring (scores from the int8 vectors), then with `rescore_vector: {oversample: 2}` (the
  best k x 2 re-scored with the float vectors, which int8_hnsw keeps on disk; --oversamples for others);
  recall@10 against the exact top 10 by numpy dot product (unit vectors: the same order as cosine).

A step projected (from the previous step's rates) to load longer than --max-step-min, or to end past
--budget-min, shrinks to the largest multiple of 50k that fits (if that is at least 1.5 times the last
size), or is skipped; either is recorded. The indices are deleted at the end.

    .venv/bin/python bench/es_knn_scale.py --es-url http://127.0.0.1:9250 \
        [--sizes 10000,100000,300000,1000000] [--queries 200] [--oversamples 2] [--budget-min 40] \
        [--max-step-min 15]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from elasticsearch import Elasticsearch, helpers

from common import load, machine, table, write_json
from index_search import vectors

K = 10
FIELD = "vector"
TYPES = ("hnsw", "int8_hnsw")


def mapping(kind: str) -> dict:
    return {"_source": {"excludes": [FIELD]},
            "properties": {FIELD: {"type": "dense_vector", "dims": 512, "index": True, "similarity": "cosine",
                                   "index_options": {"type": kind, "m": 16, "ef_construction": 100}}}}


def es_cpu_s(client: Elasticsearch) -> float:
    stats = client.nodes.stats(node_id="_local", metric="process").body
    return next(iter(stats["nodes"].values()))["process"]["cpu"]["total_in_millis"] / 1000


class Meter:
    """Wall time, this process's CPU time, the server's CPU time and the load average over a block."""

    def __init__(self, client: Elasticsearch):
        self.client = client

    def __enter__(self):
        self.wall, self.cpu, self.es = time.perf_counter(), time.process_time(), es_cpu_s(self.client)
        self.load_before = load()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self.wall
        self.cpu_s = time.process_time() - self.cpu
        self.es_cpu_s = es_cpu_s(self.client) - self.es
        self.load = f"{self.load_before} -> {load()}"

    def summary(self, prefix: str) -> dict:
        return {f"{prefix}_s": round(self.wall_s, 1), f"{prefix}_client_cpu_s": round(self.cpu_s, 1),
                f"{prefix}_es_cpu_s": round(self.es_cpu_s, 1), f"{prefix}_load": self.load}


def load_step(client: Elasticsearch, name: str, data: np.ndarray, start: int, chunk: int) -> Meter:
    """Index data[start:], refreshing once half way (so that the force merge below always has work)."""
    middle = (start + len(data)) // 2
    with Meter(client) as meter:
        for lo, hi in ((start, middle), (middle, len(data))):
            actions = ({"_index": name, "_id": str(i), FIELD: data[i].tolist()} for i in range(lo, hi))
            for ok, item in helpers.parallel_bulk(client, actions, thread_count=2, chunk_size=chunk,
                                                  queue_size=2):
                if not ok:
                    raise RuntimeError(f"bulk item failed: {item}")
            client.indices.refresh(index=name)
    return meter


def wait_for_lease(client: Elasticsearch, name: str, timeout_s: float = 90) -> float:
    """Flush, then wait until every retention lease retains nothing already indexed; returns seconds waited."""
    client.indices.flush(index=name)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        shard = client.indices.stats(index=name, level="shards", metric="docs")["indices"][name]["shards"]["0"][0]
        max_seq_no = shard["seq_no"]["max_seq_no"]
        if all(lease["retaining_seq_no"] > max_seq_no for lease in shard["retention_leases"]["leases"]):
            break
        time.sleep(2)
    return time.perf_counter() - start


def sizes(client: Elasticsearch, name: str) -> dict:
    store = client.indices.stats(index=name, metric="store")["_all"]["primaries"]["store"]["size_in_bytes"]
    seg = client.indices.stats(index=name, metric="segments", include_segment_file_sizes=True)
    seg = seg["_all"]["primaries"]["segments"]
    files = {ext: v["size_in_bytes"] for ext, v in seg.get("file_sizes", {}).items()}
    out = {"segments": seg["count"], "store_bytes": store, "files": files}
    try:
        usage = client.options(request_timeout=1800).indices.disk_usage(index=name, run_expensive_tasks=True).body
        field = usage[name]["fields"].get(FIELD, {})
        out["disk_usage"] = {"index_total_bytes": usage[name]["store_size_in_bytes"],
                             "vector_field_bytes": field.get("total_in_bytes"),
                             "vector_knn_bytes": field.get("knn_vectors_in_bytes"),
                             "recovery_source_bytes": usage[name]["fields"].get("_recovery_source", {})
                             .get("total_in_bytes"),
                             "all_fields": {f: v.get("total_in_bytes") for f, v in usage[name]["fields"].items()}}
    except Exception as exc:  # noqa: BLE001 - the API may be missing from this distribution; report why
        out["disk_usage"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return out


def search(client: Elasticsearch, name: str, q: np.ndarray, nc: int,
           oversample: float | None) -> tuple[int, float, list[int]]:
    knn = {"field": FIELD, "query_vector": q.tolist(), "k": K, "num_candidates": nc}
    if oversample:
        knn["rescore_vector"] = {"oversample": oversample}
    start = time.perf_counter()
    resp = client.search(index=name, knn=knn, size=K, source=False, filter_path="took,hits.hits._id")
    wall_ms = 1000 * (time.perf_counter() - start)
    return resp["took"], wall_ms, [int(h["_id"]) for h in resp.body.get("hits", {}).get("hits", [])]


def measure(client, name, queries, truth, warmup, nc, oversample=None) -> dict:
    for q in warmup:
        search(client, name, q, nc, oversample)
    took, wall, recall = [], [], []
    with Meter(client) as meter:
        for q, true in zip(queries, truth):
            t, w, ids = search(client, name, q, nc, oversample)
            took.append(t)
            wall.append(w)
            recall.append(len(set(ids) & set(true.tolist())) / K)
    return {"num_candidates": nc, "oversample": oversample, "took_p50_ms": round(float(np.percentile(took, 50)), 1),
            "took_p95_ms": round(float(np.percentile(took, 95)), 1), "took_mean_ms": round(float(np.mean(took)), 2),
            "client_p50_ms": round(float(np.percentile(wall, 50)), 2),
            "client_p95_ms": round(float(np.percentile(wall, 95)), 2),
            "recall_at_10": round(float(np.mean(recall)), 4), **meter.summary("search")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--es-url", default="http://127.0.0.1:9250")
    ap.add_argument("--sizes", default="10000,100000,300000,1000000",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=500, help="documents per bulk request")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--max-candidates", type=int, default=1600)
    ap.add_argument("--oversamples", default="2", type=lambda s: [float(x) for x in s.split(",") if x],
                    help="rescore_vector oversample factors tried on int8_hnsw (each with its own sweep)")
    ap.add_argument("--budget-min", type=float, default=40, help="skip a step that would end past this")
    ap.add_argument("--max-step-min", type=float, default=15, help="skip a step projected to load longer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default="bench-knn-scale")
    ap.add_argument("--out", default="es_knn_scale.json")
    args = ap.parse_args()

    client = Elasticsearch(args.es_url, request_timeout=600)
    node = next(iter(client.nodes.info(node_id="_local", metric="jvm").body["nodes"].values()))
    info = machine()
    info["elasticsearch"] = node["version"]
    info["es_heap_max_bytes"] = node["jvm"]["mem"]["heap_max_in_bytes"]
    print(f"Elasticsearch {node['version']} at {args.es_url}, heap {info['es_heap_max_bytes'] / 2**30:.1f} GiB; "
          f"{info['cpu']}, {info['nproc']} cores, load {info['loadavg']}", flush=True)

    names = {kind: f"{args.prefix}-{kind.replace('_', '-')}" for kind in TYPES}
    for kind, name in names.items():
        client.indices.delete(index=name, ignore_unavailable=True)
        client.indices.create(index=name, mappings=mapping(kind),
                              settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1",
                                        "compound_format": False})
    queries, warmup = vectors(args.queries, args.seed + 1), vectors(args.warmup, args.seed + 2)
    rows: list[dict] = []
    skipped: list[dict] = []
    started = time.perf_counter()
    done = 0
    last: dict[str, dict] = {}
    try:
        for n in args.sizes:
            if last:  # project this step from the previous one: load at its rate, merge and searches scaled
                def projected(m: int) -> tuple[float, float]:
                    load_s = sum((m - done) / last[k]["docs_per_s"] for k in TYPES)
                    rest_s = sum((last[k]["forcemerge_s"] + last[k]["measure_s"]) * m / done for k in TYPES)
                    return load_s, rest_s

                elapsed = time.perf_counter() - started
                wanted, load_s, rest_s = n, *projected(n)
                at_wanted = {"projected_load_s_at_wanted": round(load_s), "projected_rest_s_at_wanted": round(rest_s)}
                while n > done and (load_s > 60 * args.max_step_min
                                    or elapsed + load_s + rest_s > 60 * args.budget_min):
                    n = (n - 1) // 50_000 * 50_000
                    if n < 1.5 * done:  # not worth a step
                        n = done
                        break
                    load_s, rest_s = projected(n)
                note = {"wanted": wanted, **at_wanted, "n": n if n > done else None, "elapsed_s": round(elapsed)}
                if done < n != wanted:
                    note.update(projected_load_s=round(load_s), projected_rest_s=round(rest_s))
                if n != wanted:
                    skipped.append(note)
                print(f"step {note}", flush=True)
                if n <= done:
                    break
            added = n - done
            data = vectors(n, args.seed)
            truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :K]  # (q, 10) exact
            for kind in TYPES:
                name = names[kind]
                print(f"n={n} {kind}: loading {added} vectors (load {load()})", flush=True)
                meter = load_step(client, name, data, done, args.chunk)
                row = {"n": n, "type": kind, "added": added, "docs_per_s": round(added / meter.wall_s),
                       **meter.summary("bulk")}
                row["segments_before_merge"] = client.indices.stats(index=name, metric="segments")[
                    "_all"]["primaries"]["segments"]["count"]
                row["lease_wait_s"] = round(wait_for_lease(client, name), 1)
                with Meter(client) as merge:
                    client.options(request_timeout=3600).indices.forcemerge(index=name, max_num_segments=1)
                    client.indices.refresh(index=name)
                row.update(forcemerge_s=round(merge.wall_s, 1), forcemerge_es_cpu_s=round(merge.es_cpu_s, 1))
                count = client.count(index=name)["count"]
                assert count == n, (count, n)
                row.update(sizes(client, name))
                print(f"  {({k: v for k, v in row.items() if k != 'disk_usage'})}", flush=True)
                row["searches"] = []
                measure_start = time.perf_counter()
                for oversample in ([None, *args.oversamples] if kind.startswith("int8") else [None]):
                    candidates = [100, 200] + [c for c in (400, 800, 1600, 3200) if c <= args.max_candidates]
                    if oversample is None and kind.startswith("int8"):
                        candidates = [100, 200]  # without rescoring the int8 scores cap recall; show it, go on
                    for nc in candidates:
                        if nc > 200 and row["searches"][-1]["recall_at_10"] >= args.target_recall:
                            break
                        result = measure(client, name, queries, truth, warmup, nc, oversample)
                        row["searches"].append(result)
                        print(f"  {result}", flush=True)
                row["measure_s"] = round(time.perf_counter() - measure_start, 1)
                rows.append(row)
                last[kind] = row
            done = n
    finally:
        for name in names.values():
            client.indices.delete(index=name, ignore_unavailable=True)
    info["loadavg_after"] = load()
    path = write_json(args.out, {"machine": info, "queries": args.queries, "warmup": args.warmup, "k": K,
                                 "seed": args.seed, "chunk": args.chunk, "index_options": {"m": 16,
                                 "ef_construction": 100, "similarity": "cosine"}, "source_excludes_vector": True,
                                 "forcemerge_max_num_segments": 1, "compound_format": False,
                                 "total_s": round(time.perf_counter() - started),
                                 "process_cpu_s": round(time.process_time(), 1), "rows": rows,
                                 "skipped": skipped})

    print(f"\nload {info['loadavg']} before, {info['loadavg_after']} after; "
          f"this process {time.process_time():.0f} CPU s in {time.perf_counter() - started:.0f} s\n")
    cols = ["n", "type", "docs/s", "bulk ES cpu s", "merge s", "nc", "oversample", "took p50", "took p95", "client p50",
            "recall@10", "store MiB", "vector field MiB", "search load"]
    lines = []
    for r in rows:
        du = r["disk_usage"].get("vector_field_bytes")
        for i, s in enumerate(r["searches"]):
            first = i == 0
            lines.append([r["n"] if first else "", r["type"] if first else "", r["docs_per_s"] if first else "",
                          r["bulk_es_cpu_s"] if first else "", r["forcemerge_s"] if first else "",
                          s["num_candidates"], s["oversample"] or "", s["took_p50_ms"], s["took_p95_ms"],
                          s["client_p50_ms"],
                          s["recall_at_10"], round(r["store_bytes"] / 2**20, 1) if first else "",
                          (round(du / 2**20, 1) if du else "n/a") if first else "", s["search_load"]])
    print(table(cols, lines))
    print(f"\nJSON: {path}  (pid {os.getpid()})")


if __name__ == "__main__":
    main()
