"""Upload -> searchable through the real local stack (infra/local), and where an image's time goes.

    .venv/bin/python bench/ingest_latency.py --store localstack --images 40
    .venv/bin/python bench/ingest_latency.py --store minio --images 40

It brings up its own stack (own state folder and ports; Elasticsearch is shared), measures `up` from stopped
processes (installs cached), then: trickle (one upload at a time, each waited for: upload->searchable p50/p95),
burst (all uploads at once: sustained images/s), and a stage breakdown (GET, decode, embed, index) of the
same images in-process. Results: bench/results/ingest-<store>.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import requests
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from servers import free_port  # noqa: E402

from imgsearch.index import doc_id  # noqa: E402


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["localstack", "minio"], default="localstack")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--folder", type=Path, default=REPO.parent / "shared/datasets/smvs_dvd_covers/Reference")
    args = parser.parse_args()
    images = sorted(args.folder.glob("*.jpg"))[: args.images]
    state = Path(tempfile.mkdtemp(prefix=f"bench-{args.store}-"))
    index = f"bench-{args.store}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "IMGSEARCH_LOCAL_DIR": str(state), "IMGSEARCH_ES_INDEX": index,
           "IMGSEARCH_BUCKET": "bench"}
    for name in ("LOCALSTACK", "MINIO", "MINIO_CONSOLE", "WEBHOOK", "API"):
        env[f"IMGSEARCH_LOCAL_{name}_PORT"] = str(free_port())
    stack = [sys.executable, str(REPO / "infra/local/stack.py")]

    started = time.perf_counter()
    up = subprocess.run([*stack, "up", "--store", args.store], env=env, capture_output=True, text=True, check=True)
    up_seconds = time.perf_counter() - started
    values = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    es = values["IMGSEARCH_ES_URL"]
    s3 = boto3.client("s3", endpoint_url=values["AWS_ENDPOINT_URL"], aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))

    def searchable(keys) -> int:
        ids = [doc_id("bench", k) for k in keys]
        body = {"query": {"ids": {"values": ids}}, "size": 0}
        return requests.post(f"{es}/{index}/_search", json=body, timeout=10).json()["hits"]["total"]["value"]

    def wait(keys, timeout=600) -> float:
        t0 = time.perf_counter()
        while searchable(keys) < len(keys):
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"timed out waiting for {len(keys)} keys")
            time.sleep(0.05)
        return time.perf_counter()

    try:
        # Warm-up: the first event loads the model in the worker.
        s3.put_object(Bucket="bench", Key="warmup.jpg", Body=images[0].read_bytes())
        t0 = time.perf_counter()
        wait(["warmup.jpg"])
        first_event = time.perf_counter() - t0

        trickle = []
        for path in images:
            key = f"trickle/{path.name}"
            t0 = time.perf_counter()
            s3.put_object(Bucket="bench", Key=key, Body=path.read_bytes())
            trickle.append(wait([key]) - t0)

        keys = [f"burst/{p.name}" for p in images]
        t0 = time.perf_counter()
        for key, path in zip(keys, images):
            s3.put_object(Bucket="bench", Key=key, Body=path.read_bytes())
        burst_seconds = wait(keys) - t0
        stages = stage_breakdown(s3, keys, es)
    finally:
        subprocess.run([*stack, "down", "--keep-elasticsearch"], env=env, capture_output=True)
        requests.delete(f"{es}/{index}", timeout=10)

    result = {
        "store": args.store, "images": len(images), "up_seconds_processes_only": round(up_seconds, 1),
        "first_event_seconds_incl_model_load": round(first_event, 2),
        "trickle_p50_s": round(statistics.median(trickle), 3), "trickle_p95_s": round(percentile(trickle, 95), 3),
        "burst_images_per_s": round(len(images) / burst_seconds, 2), "stages_ms_per_image": stages,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    out = REPO / "bench/results" / f"ingest-{args.store}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def stage_breakdown(s3, keys, es_url) -> dict:
    """Per-image cost of each step, in this process, on the same objects (the queue wait is the rest)."""
    from elasticsearch import Elasticsearch

    from imgsearch import local_features
    from imgsearch.config import Settings
    from imgsearch.embedder import Embedder
    from imgsearch.images import decode_image
    from imgsearch.index import ImageDocument
    from imgsearch.index.elasticsearch import ElasticsearchIndex

    settings = Settings.from_env()
    embedder = Embedder(settings.weights, batch_size=1)
    index = ElasticsearchIndex(Elasticsearch(es_url), index=f"bench-stages-{uuid.uuid4().hex[:6]}",
                               model_id=embedder.model_id)
    index.ensure_index()
    first = s3.get_object(Bucket="bench", Key=keys[0])["Body"].read()
    embedder.embed([decode_image(first, max_bytes=10**8, max_pixels=10**8).image])  # load the model first
    times = {"s3_get": [], "decode": [], "embed": [], "local_features": [], "index": []}
    for key in keys:
        t0 = time.perf_counter()
        data = s3.get_object(Bucket="bench", Key=key)["Body"].read()
        t1 = time.perf_counter()
        decoded = decode_image(data, max_bytes=10**8, max_pixels=10**8, draft_size=224)
        t2 = time.perf_counter()
        described = embedder.describe([decoded.image])[0]  # the stored vector is whiten(raw): one matrix product
        t3 = time.perf_counter()
        local_features.encode(local_features.extract(decoded.image))
        t3b = time.perf_counter()
        index.upsert([ImageDocument(bucket="bench", key=key, vector=described.raw, model_id=embedder.model_id,
                                    descriptors=described.to_bytes())])
        t4 = time.perf_counter()
        for name, (a, b) in zip(times, ((t0, t1), (t1, t2), (t2, t3), (t3, t3b), (t3b, t4))):
            times[name].append((b - a) * 1000)
    index.delete_index()
    return {name: round(statistics.median(values), 1) for name, values in times.items()}


if __name__ == "__main__":
    sys.exit(main())
