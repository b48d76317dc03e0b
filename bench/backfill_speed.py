"""How fast `imgsearch backfill` lists a bucket and enqueues it (issue 17, item 5), on moto's server.

    .venv/bin/python bench/backfill_speed.py --objects 1000 --runs 3

Starts its own moto server (S3 + SQS over HTTP, as the integration tests do), fills a bucket with tiny PNGs
under odd keys (not timed), then times, `--runs` times each: listing alone, and a full backfill (list, build the
notifications, SendMessageBatch 10 at a time, the checkpoint written after every batch) with --restart, checking
that the queue holds exactly one message per object; and once more with SQS replaced by a stub that accepts every
batch at once, to separate backfill's own cost (listing, building the messages, the checkpoint) from the queue's.
moto's SendMessageBatch slows as its queue fills (each call walks the queue: ~25 ms empty, ~290 ms at 1 000
messages), so the moto figure is a floor, not what SQS does. Embedding is not timed: draining is the extract
function's work, measured elsewhere. Results: bench/results/backfill_speed.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from common import machine, table, write_json  # noqa: E402
from servers import MotoServer  # noqa: E402

ODD = ["", "été 2024/", "a+b/", "100% sure/", "日本/", "x y/z/"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    server = MotoServer().start()
    try:
        for name, value in {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "test",
                            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ[name] = value
        return run(args)
    finally:
        server.stop()


def run(args) -> int:
    import boto3

    from helpers import distinct_colours, png
    from imgsearch.backfill import backfill, open_bucket
    from imgsearch.config import Settings

    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    bucket = f"bench-backfill-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    bodies = [png(c) for c in distinct_colours(50)]
    keys = [f"{ODD[i % len(ODD)]}img {i:05d}+é.png" for i in range(args.objects)]
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ik: s3.put_object(Bucket=bucket, Key=ik[1], Body=bodies[ik[0] % 50]), enumerate(keys)))
    upload_s = time.perf_counter() - started

    data_dir = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    settings = Settings.from_env(data_dir=data_dir, allowed_buckets=(bucket,))
    storage = open_bucket(settings, bucket)
    list_s, backfill_s, reports = [], [], []
    for _ in range(args.runs):
        queue = sqs.create_queue(QueueName=f"{bucket}-{uuid.uuid4().hex[:6]}")["QueueUrl"]
        started = time.perf_counter()
        listed = sum(1 for _ in storage.list(""))
        list_s.append(time.perf_counter() - started)
        assert listed == args.objects, listed
        started = time.perf_counter()
        report = backfill(storage, "", queue, sqs, checkpoint=data_dir / "checkpoint.json", restart=True)
        backfill_s.append(time.perf_counter() - started)
        depth = int(sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"])
        assert report.ok and report.sent == args.objects == depth, (report.to_dict(), depth)
        reports.append(report.to_dict() | {"queue_depth": depth})
        sqs.delete_queue(QueueUrl=queue)

    class StubSQS:  # accepts everything at once: what is left is backfill's own work and S3's listing
        meta = sqs.meta

        def get_queue_attributes(self, **kwargs):
            return {"Attributes": {}}

        def send_message_batch(self, QueueUrl, Entries):
            return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    started = time.perf_counter()
    stub = backfill(storage, "", "stub", StubSQS(), checkpoint=data_dir / "stub.json", restart=True)
    stub_s = time.perf_counter() - started
    assert stub.ok and stub.sent == args.objects

    median_backfill, median_list = statistics.median(backfill_s), statistics.median(list_s)
    result = {"date": date.today().isoformat(), "machine": machine(), "objects": args.objects,
              "upload_s": round(upload_s, 2), "list_s": [round(s, 3) for s in list_s],
              "backfill_s": [round(s, 3) for s in backfill_s],
              "objects_per_s": round(args.objects / median_backfill, 1),
              "stub_sqs_s": round(stub_s, 3), "stub_objects_per_s": round(args.objects / stub_s, 1), "batches": reports[-1]["batches"],
              "reports": reports}
    path = write_json("backfill_speed.json", result)
    print(table(["objects", "list only (median)", "backfill on moto (median)", "objects/s", "batches",
                 "messages on the queue", "backfill, SQS stubbed", "objects/s"],
                [[args.objects, f"{median_list:.2f} s", f"{median_backfill:.2f} s", f"{result['objects_per_s']:.0f}",
                  result["batches"], reports[-1]["queue_depth"], f"{stub_s:.2f} s",
                  f"{result['stub_objects_per_s']:.0f}"]]))
    print(f"runs: list {result['list_s']} s, backfill {result['backfill_s']} s; load {machine()['loadavg']}; "
          f"raw: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
