"""Chaos run (issue 17): nothing lost when pieces fail while a bucket's uploads drain into the index.

On a private local stack (infra/local/stack.py with its own state folder, ports and Elasticsearch), upload N
images with distinct keys (odd characters included); while the queue drains, SIGKILL the worker (its supervisor
restarts it), stop Elasticsearch for a while and start it again, delete some keys and overwrite others with
other bytes. When everything has settled, compare the bucket with the index:

  lost   objects in the bucket that are not indexed
  extra  documents whose object is gone
  stale  documents of overwritten objects still holding the old bytes (their ETag differs from the object's)
  dead letters  messages in the dead-letter queue (LocalStack path), failures the webhook logged (MinIO path)

and how long each upload took to become searchable while the burst drained (p50/p95; the index is polled
every half second). With --kills 0 --es-outage 0 --deletes 0 --overwrites 0 it is a plain burst.

then run `imgsearch sync` (the documented repair) and report what it found to fix (nothing, if all is well).

  .venv/bin/python bench/chaos.py [--store localstack|minio] [--images 200] [--kills 2] [--es-outage 20]
                                  [--deletes 10] [--overwrites 10] [--json OUT]

On the MinIO path the piece killed is the webhook receiver (MinIO keeps undelivered events in its queue folder
and retries them). Needs scripts/setup's environment (weights, int8 model) and the SMVS dataset beside the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STACK = [sys.executable, str(REPO / "infra/local/stack.py")]
DATA = Path(os.environ.get("SMVS_DIR", REPO.parent / "shared" / "datasets" / "smvs_dvd_covers"))
ODD = ["plain", "with space", "plus+sign", "per%cent", "ünï cødé", "emoji-📷", "a=b&c", "brackets[1]"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images(n: int) -> list[tuple[str, bytes]]:
    """N distinct photos (SMVS covers, then phone photos), under keys with odd characters."""
    paths = sorted((DATA / "Reference").glob("*.jpg")) + sorted((DATA / "E63").glob("*.jpg"))
    if len(paths) < n:
        raise SystemExit(f"need {n} images, found {len(paths)} under {DATA}")
    return [(f"{ODD[i % len(ODD)]}/{i:04d} {p.parent.name}.jpg", p.read_bytes()) for i, p in enumerate(paths[:n])]


class Stack:
    """A private local stack: its own state folder, ports, Elasticsearch home, bucket and index."""

    def __init__(self, store: str, state: Path, workers: int = 1):
        self.store, self.state, self.workers = store, state, workers
        tag = uuid.uuid4().hex[:8]
        self.env = {**os.environ, "IMGSEARCH_LOCAL_DIR": str(state), "IMGSEARCH_ES_HOME": str(state / "es"),
                    "IMGSEARCH_ES_HEAP": "512m", "IMGSEARCH_ES_INDEX": f"chaos-{tag}",
                    "IMGSEARCH_BUCKET": f"chaos-{tag}", "IMGSEARCH_QUEUE_VISIBILITY_TIMEOUT": "30"}
        for name in ("ES", "LOCALSTACK", "MINIO", "MINIO_CONSOLE", "WEBHOOK", "API"):
            self.env[f"IMGSEARCH_LOCAL_{name}_PORT"] = str(free_port())
        self.es_env = {**self.env, "IMGSEARCH_ES_PORT": self.env["IMGSEARCH_LOCAL_ES_PORT"]}

    def up(self) -> dict:
        done = subprocess.run([*STACK, "up", "--store", self.store, "--workers", str(self.workers)], env=self.env,
                              capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            self.down()
            raise SystemExit(f"infra/local up failed:\n{done.stderr[-3000:]}")
        self.values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        import boto3
        from botocore.config import Config

        client = {"endpoint_url": self.values["AWS_ENDPOINT_URL"], "region_name": "us-east-1",
                  "aws_access_key_id": self.values["AWS_ACCESS_KEY_ID"],
                  "aws_secret_access_key": self.values["AWS_SECRET_ACCESS_KEY"]}
        self.s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **client)
        self.sqs = boto3.client("sqs", **client) if self.store == "localstack" else None
        return self.values

    def status(self) -> dict:
        done = subprocess.run([*STACK, "status"], env=self.env, capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout)

    def down(self) -> None:
        subprocess.run([*STACK, "down"], env=self.env, capture_output=True, timeout=300)

    def es(self, action: str) -> None:
        subprocess.run([str(REPO / f"infra/elasticsearch/{action}")], env=self.es_env, capture_output=True,
                       check=True, timeout=600)

    def indexed(self) -> dict[str, str | None]:
        """key -> the ETag its document holds, straight from Elasticsearch (refreshed)."""
        import requests

        url = f"{self.values['IMGSEARCH_ES_URL']}/{self.values['IMGSEARCH_ES_INDEX']}"
        try:
            requests.post(f"{url}/_refresh", timeout=10)
            hits = requests.post(f"{url}/_search", timeout=30, json={
                "size": 10_000, "_source": ["file_name", "etag", "bucket"]}).json()["hits"]["hits"]
        except (requests.RequestException, KeyError, ValueError):
            return {}
        return {h["_source"]["file_name"]: h["_source"].get("etag") for h in hits}

    def whitenings(self) -> dict[str, int]:
        """How many documents carry each whitening id (after racing refits, all should carry the current one)."""
        import requests

        url = f"{self.values['IMGSEARCH_ES_URL']}/{self.values['IMGSEARCH_ES_INDEX']}/_search"
        body = {"size": 0, "aggs": {"w": {"terms": {"field": "whitening", "missing": "(none)", "size": 50}}}}
        buckets = requests.post(url, json=body, timeout=30).json()["aggregations"]["w"]["buckets"]
        return {b["key"]: b["doc_count"] for b in buckets}

    def bucket_objects(self) -> dict[str, str]:
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.values["IMGSEARCH_BUCKET"]):
            found.update({o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", [])})
        return found

    def queue(self) -> dict:
        return self.status().get("queue", {})

    def dead_letters(self) -> list[dict]:
        if self.store == "localstack":
            url = self.values["IMGSEARCH_DEAD_LETTER_QUEUE_URL"]
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                           WaitTimeSeconds=1, VisibilityTimeout=0)
            return [{k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
                    for m in got.get("Messages", [])]
        import requests

        response = requests.get(f"{self.values['IMGSEARCH_WEBHOOK_URL']}/failures", timeout=10,
                                headers={"Authorization": f"Bearer {self.values['IMGSEARCH_WEBHOOK_TOKEN']}"})
        return response.json().get("failures", []) if response.ok else [{"error": response.text[:200]}]

    def victim(self) -> int | None:
        """The pid of the piece the chaos kills: the worker (LocalStack) or the webhook receiver (MinIO)."""
        return self.status()["worker" if self.store == "localstack" else "webhook"].get("child")


def run(args) -> dict:
    state = Path(tempfile.mkdtemp(prefix="imgsearch-chaos-"))
    state.chmod(0o755)  # Elasticsearch runs as its own user when we are root: it must reach its home in here
    stack = Stack(args.store, state, args.workers)
    started = time.monotonic()
    values = stack.up()
    print(f"stack up in {time.monotonic() - started:.0f} s: {values['IMGSEARCH_API_URL']}", file=sys.stderr)
    bucket, photos = values["IMGSEARCH_BUCKET"], images(args.images)
    log = []

    def note(what: str) -> None:
        log.append((round(time.monotonic() - t0, 1), what))
        print(f"[{log[-1][0]:7.1f} s] {what}", file=sys.stderr)

    t0 = time.monotonic()
    uploaded_at, searchable_at = {}, {}  # key -> seconds since t0: put answered, first seen in the index

    def upload_all() -> None:
        for key, body in photos:
            stack.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
            uploaded_at[key] = time.monotonic() - t0

    uploader = threading.Thread(target=upload_all)
    uploader.start()
    note(f"uploading {len(photos)} images")
    victims = list(range(args.deletes + args.overwrites))
    deleted = [photos[i][0] for i in victims[:args.deletes]]
    overwritten = [photos[i][0] for i in victims[args.deletes:]]
    marks = {"kill": [0.15, 0.55][:args.kills], "es": 0.35 if args.es_outage else None, "churn": 0.25}

    def seen() -> dict:
        now = stack.indexed()
        for key in now.keys() - searchable_at.keys():
            searchable_at[key] = time.monotonic() - t0
        return now

    def progress() -> float:
        return len(seen()) / len(photos)

    done_kills, es_done, churn_done = 0, not args.es_outage, False
    while done_kills < len(marks["kill"]) or not es_done or not churn_done:
        p = progress()
        if done_kills < len(marks["kill"]) and p >= marks["kill"][done_kills]:
            pid = stack.victim()
            if pid:
                os.kill(pid, signal.SIGKILL)
                note(f"SIGKILL {'worker' if args.store == 'localstack' else 'webhook'} pid {pid} at {p:.0%} indexed")
                done_kills += 1
        if not churn_done and p >= marks["churn"]:
            uploader.join()
            for key in deleted:
                stack.s3.delete_object(Bucket=bucket, Key=key)
            for n, key in enumerate(overwritten):
                other = (DATA / "Reference" / f"{100 - n:03d}.jpg").read_bytes()  # another cover's bytes
                stack.s3.put_object(Bucket=bucket, Key=key, Body=other, ContentType="image/jpeg")
            note(f"deleted {len(deleted)} and overwrote {len(overwritten)} keys at {p:.0%} indexed")
            churn_done = True
        if not es_done and p >= marks["es"]:
            stack.es("stop")
            note(f"Elasticsearch stopped at {p:.0%} indexed")
            time.sleep(args.es_outage)
            stack.es("start")
            note("Elasticsearch started again")
            es_done = True
        if time.monotonic() - t0 > args.timeout:
            break
        time.sleep(0.5)
    uploader.join()

    # Settled: the queue empty (LocalStack) and the index unchanged for a while, or the deadline.
    expected_count = len(photos) - len(deleted)
    quiet_since, last = time.monotonic(), None
    while time.monotonic() - t0 < args.timeout:
        now = seen()
        queue = stack.queue() if args.store == "localstack" else {}
        busy = queue.get("waiting", 0) + queue.get("in_flight", 0) if queue and "error" not in queue else 0
        if now != last or busy:
            quiet_since, last = time.monotonic(), now
        if len(now) == expected_count and not busy and time.monotonic() - quiet_since > 5:
            break
        if time.monotonic() - quiet_since > 90:  # nothing moves any more
            break
        time.sleep(0.5)
    drained = time.monotonic() - t0
    note("settled")

    objects, indexed = stack.bucket_objects(), stack.indexed()
    letters = stack.dead_letters()
    sync = subprocess.run([str(REPO / ".venv/bin/imgsearch"), "--backend", "elasticsearch", "sync",
                           f"s3://{bucket}", "--json"],
                          env={**stack.env, **values}, capture_output=True, text=True, timeout=1200)
    try:
        repaired = json.loads(sync.stdout)
    except ValueError:
        repaired = {"error": (sync.stderr or sync.stdout)[-500:]}
    status = stack.status()
    churned = set(deleted) | set(overwritten)
    latencies = sorted(searchable_at[k] - uploaded_at[k] for k in uploaded_at.keys() & searchable_at.keys()
                       if k not in churned)
    stats = subprocess.run([str(REPO / ".venv/bin/imgsearch"), "--backend", "elasticsearch", "stats"],
                           env={**stack.env, **values}, capture_output=True, text=True, timeout=300)
    current = json.loads(stats.stdout)["whitening"] if stats.returncode == 0 else None
    whitenings = stack.whitenings()
    report = {
        "store": args.store, "workers": args.workers, "images": len(photos), "kills": done_kills,
        "es_outage_s": args.es_outage,
        "deleted": len(deleted), "overwritten": len(overwritten), "expected": len(objects),
        "indexed": len(indexed),
        "lost": sorted(set(objects) - set(indexed)),
        "extra": sorted(set(indexed) - set(objects)),
        "stale": sorted(k for k in set(objects) & set(indexed) if indexed[k] != objects[k]),
        "dead_letters": letters,
        "sync_found": {k: repaired.get(k) for k in ("indexed", "deleted", "failed") if k in repaired} or repaired,
        "restarts": status["worker" if args.store == "localstack" else "webhook"].get("restarts"),
        "whitening": current, "documents_of_an_older_whitening": sum(n for w, n in whitenings.items() if w != current),
        "wall_s": round(drained, 1),
        "upload_to_searchable_s": {"p50": round(latencies[len(latencies) // 2], 1),
                                   "p95": round(latencies[min(len(latencies) - 1, round(0.95 * len(latencies)))], 1),
                                   "max": round(latencies[-1], 1), "n": len(latencies)} if latencies else None,
        "timeline": log,
        "load_avg": os.getloadavg(),
    }
    if not args.keep:
        stack.down()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["localstack", "minio"], default="localstack")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the queue (LocalStack path)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--kills", type=int, default=2, choices=[0, 1, 2])
    parser.add_argument("--es-outage", type=float, default=20, help="seconds Elasticsearch stays stopped (0: none)")
    parser.add_argument("--deletes", type=int, default=10)
    parser.add_argument("--overwrites", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1500, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = run(args)
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text)
    ok = not (report["lost"] or report["extra"] or report["stale"] or report["dead_letters"]
              or report["documents_of_an_older_whitening"])
    print(f"{'OK' if ok else 'FAILED'}: {len(report['lost'])} lost, {len(report['extra'])} extra, "
          f"{len(report['stale'])} stale, {len(report['dead_letters'])} dead letters, {report['wall_s']} s",
          file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
