"""The fast path side by side with the path before it and with the original demo's model call (issue 18).

Every figure comes from one run of this script on the same images, each path in its own process:

  query   POST /search with each E63 phone photo (multipart, re-ranking on, embedded index of the 100
          catalogue covers), through `imgsearch serve` of each checkout, after 3 warm-up queries: wall ms per
          request, the server's CPU ms per request, and top-1 from the responses.
  ingest  whole-pipeline ingest of the 100 covers (read, decode, descriptors, local features, index, whitening
          fit) in a warm process, against a faithful copy of the demo's model call (Keras VGG19 include_top=False,
          pooling="max", 224x224, one predict per image) on the same files.
  cold    a new process: import the search app, build the service, answer one POST /search (the first query
          a cold Lambda answers), wall seconds from process start.

Paths: "before" is the commit given by --before (the four-pass fp32 recipe), checked out into a git worktree
and run with the same virtualenv; "int8" and "fp32" are this checkout with IMGSEARCH_PRECISION set.

    .venv/bin/python bench/fast_path.py [--before 1fa9b03] [--queries 100] [--parts query,ingest,cold]
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
from pathlib import Path

import requests

from common import COVERS, REPO, WEIGHTS, load, machine, p95, table, write_json

sys.path.insert(0, str(REPO / "tests"))
from servers import free_port, wait_for  # noqa: E402  (the tests' helpers for local servers)

PYTHON = str(REPO / ".venv" / "bin" / "python")


def checkout(rev: str) -> Path:
    """A worktree of `rev` (reused between runs)."""
    path = Path(tempfile.gettempdir()) / f"imgsearch-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return path


def environment(root: Path, precision: str | None, data_dir: Path, es_url: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root / "layers" / "imgsearch"), "IMGSEARCH_DATA_DIR": str(data_dir),
           "IMGSEARCH_VGG19_WEIGHTS": str(WEIGHTS), "TF_CPP_MIN_LOG_LEVEL": "2",
           "IMGSEARCH_FUNCTIONS_DIR": str(root / "functions")}
    if precision:
        env["IMGSEARCH_PRECISION"] = precision
    if es_url:  # a fresh index of its own on that server (deleted by the caller)
        env.update(IMGSEARCH_BACKEND="elasticsearch", IMGSEARCH_ES_URL=es_url,
                   IMGSEARCH_ES_INDEX=f"bench-fast-path-{data_dir.name}")
    return env


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")  # utime + stime


def queries(n: int) -> list[tuple[Path, str]]:
    return [(COVERS / "E63" / f"{i:03d}.jpg", f"{i:03d}.jpg") for i in range(1, n + 1)]


# -- query: POST /search through `imgsearch serve` ---------------------------------------------------------------
def run_queries(label: str, env: dict, n: int) -> dict:
    subprocess.run([PYTHON, "-m", "imgsearch.cli", "index", str(COVERS / "Reference")], env=env, check=True,
                   capture_output=True)
    port = free_port()
    server = subprocess.Popen([PYTHON, "-m", "imgsearch.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(f"{url}/health", timeout=120), f"{label}: the server did not start"
        post = lambda path: requests.post(f"{url}/search", files={"file": path.read_bytes()}, timeout=120)  # noqa: E731
        for path, _ in queries(3):
            post(path).raise_for_status()
        walls, cpus, right = [], [], 0
        load_before = load()
        for path, expected in queries(n):
            cpu0, t0 = cpu_ms(server.pid), time.perf_counter()
            response = post(path)
            walls.append((time.perf_counter() - t0) * 1000)
            cpus.append(cpu_ms(server.pid) - cpu0)
            response.raise_for_status()
            hits = response.json()["hits"]
            right += bool(hits) and hits[0]["key"] == expected
        return {"path": label, "p50_ms": round(statistics.median(walls)), "p95_ms": round(p95(walls)),
                "cpu_ms_per_query": round(statistics.mean(cpus)), "top1": round(right / n, 2),
                "load_before": load_before, "load_after": load()}
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- ingest: the pipeline vs the demo's model call ------------------------------------------------------------
INGEST = r"""
import json, os, resource, shutil, sys, tempfile, time
from pathlib import Path
from imgsearch.config import Settings
from imgsearch.pipeline import ImageSearch
from imgsearch.storage import FolderStorage
covers = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as scratch:
    folder = Path(scratch) / "covers"
    shutil.copytree(covers, folder)
    service = ImageSearch.open(Settings.from_env(data_dir=Path(scratch) / "data"))
    from PIL import Image
    service.embedder.embed([Image.open(next(folder.glob("*.jpg"))).convert("RGB")])  # load the model first
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    report = service.ingester.index_source(FolderStorage(folder))
    upkeep = getattr(service, "upkeep", None)
    if upkeep is not None:
        upkeep.after_ingest()  # the whitening fit and re-derivation belong to ingest
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    print(json.dumps({"images": report.indexed, "seconds": seconds, "cpu_s": cpu}))
"""

INGEST_BEFORE = INGEST.replace(  # the API before the redesign: ImageSearch(settings), refits inside index_source
    "service = ImageSearch.open(Settings.from_env(data_dir=Path(scratch) / \"data\"))",
    "service = ImageSearch(Settings.from_env(data_dir=Path(scratch) / \"data\")); service.index.ensure_index()").replace(
    "service.ingester.index_source", "service.index_source")

DEMO = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
import keras
from keras.applications.vgg19 import VGG19, preprocess_input
from PIL import Image
paths = sorted(Path(sys.argv[1]).glob("*.jpg"))
model = VGG19(include_top=False, weights=sys.argv[2], pooling="max")  # the demo's model service
def embed(path):  # the demo's call: decode, resize to 224x224, preprocess, one predict per image
    x = np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32)[None]
    v = model.predict(preprocess_input(x), verbose=0)[0]
    return v / np.linalg.norm(v)
embed(paths[0])
usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for path in paths:
    embed(path)
seconds = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"images": len(paths), "seconds": seconds,
                  "cpu_s": usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime}))
"""


def run_ingest(label: str, env: dict, code: str, *args: str) -> dict:
    load_before = load()
    out = subprocess.run([PYTHON, "-c", code, *args], env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"path": label, "images_per_s": round(result["images"] / result["seconds"], 2),
            "cpu_ms_per_image": round(1000 * result["cpu_s"] / result["images"]), "images": result["images"],
            "load_before": load_before, "load_after": load()}


# -- cold start ---------------------------------------------------------------------------------------------------
COLD = r"""
import base64, json, sys, time
started = float(sys.argv[2])
from imgsearch.local import load_function
app = load_function("search").app
event = {"resource": "/search", "path": "/search", "httpMethod": "POST",
         "headers": {"content-type": "image/jpeg"}, "multiValueHeaders": {}, "queryStringParameters": None,
         "multiValueQueryStringParameters": None, "pathParameters": None, "stageVariables": None,
         "requestContext": {"resourcePath": "/search", "httpMethod": "POST", "path": "/search", "stage": "api",
                            "requestId": "cold", "identity": {"sourceIp": "127.0.0.1"}},
         "body": base64.b64encode(open(sys.argv[1], "rb").read()).decode(), "isBase64Encoded": True}
class Context:
    function_name, aws_request_id, memory_limit_in_mb = "search", "cold", 3008
    def get_remaining_time_in_millis(self): return 900000
response = app(event, Context())
body = json.loads(response["body"])
print(json.dumps({"status": response["statusCode"], "seconds": time.time() - started,
                  "first": body["hits"][0]["key"] if body.get("hits") else None}))
"""


def run_cold(label: str, env: dict, repeats: int = 3) -> dict:
    runs = []
    for _ in range(repeats):
        load_before = load()
        out = subprocess.run([PYTHON, "-c", COLD, str(COVERS / "E63" / "001.jpg"), str(time.time())], env=env,
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert result["status"] == 200, result
        runs.append(result["seconds"])
    return {"path": label, "first_query_s_median": round(statistics.median(runs), 2),
            "runs_s": [round(r, 2) for r in runs], "load_before": load_before}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="1fa9b03", help="the commit of the path before (four fp32 passes)")
    parser.add_argument("--now", default="HEAD", help="the commit measured as now (a worktree: uncommitted edits "
                                                     "in this checkout do not leak into the figures)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--parts", default="query,ingest,cold")
    parser.add_argument("--es-url", help="also measure POST /search on this Elasticsearch (before and now, int8)")
    parser.add_argument("--paths", default="before,int8,fp32", help="which of the three paths to run")
    args = parser.parse_args()
    parts = args.parts.split(",")
    before = checkout(args.before)
    now_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.now], check=True,
                             capture_output=True, text=True).stdout.strip()
    now = checkout(now_rev)
    paths = [("before: 4 passes, fp32 (TensorFlow)", before, None),
             ("now: 2 passes, int8 (OpenVINO, the default)", now, "int8"),
             ("now: 2 passes, fp32 (TensorFlow)", now, "fp32")]
    paths = [path for path, name in zip(paths, ("before", "int8", "fp32")) if name in args.paths.split(",")]
    results = {"machine": machine(), "before": args.before, "now": now_rev}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as scratch:
        data = {label: Path(scratch) / str(i) for i, (label, _, _) in enumerate(paths)}
        if "query" in parts:
            results["query"] = [run_queries(label, environment(root, precision, data[label]), args.queries)
                                for label, root, precision in paths]
            if args.es_url:
                for i, (label, root, precision) in enumerate(p for p in paths if p[2] != "fp32"):
                    es_data = Path(scratch) / f"es{i}"
                    try:
                        results["query"].append(run_queries(f"{label}, Elasticsearch hnsw",
                                                            environment(root, precision, es_data, args.es_url),
                                                            args.queries))
                    finally:
                        index = f"bench-fast-path-{es_data.name}"
                        requests.delete(f"{args.es_url}/{index},{index}_whitening?ignore_unavailable=true", timeout=60)
            print(table(["path", "p50 ms", "p95 ms", "server CPU ms/query", "top-1", "load before → after"],
                        [[r["path"], r["p50_ms"], r["p95_ms"], r["cpu_ms_per_query"], r["top1"],
                          f"{r['load_before']} → {r['load_after']}"] for r in results["query"]]), flush=True)
        if "ingest" in parts:
            rows = [run_ingest("the demo's model call (Keras predict per image, 224x224, no index)",
                               environment(REPO, "fp32", Path(scratch) / "demo"), DEMO, str(COVERS / "Reference"),
                               str(WEIGHTS))]
            for label, root, precision in paths:
                code = INGEST_BEFORE if root == before else INGEST
                rows.append(run_ingest(label, environment(root, precision, Path(scratch) / "ingest"), code,
                                       str(COVERS / "Reference")))
            demo = rows[0]["images_per_s"]
            for row in rows:
                row["x_demo"] = round(row["images_per_s"] / demo, 2)
            results["ingest"] = rows
            print(table(["path", "images/s", "× demo", "CPU ms/image", "load before → after"],
                        [[r["path"], r["images_per_s"], r["x_demo"], r["cpu_ms_per_image"],
                          f"{r['load_before']} → {r['load_after']}"] for r in rows]), flush=True)
        if "cold" in parts:
            results["cold"] = [run_cold(label, environment(root, precision, data[label]))
                               for label, root, precision in paths if "query" in parts]
            print(table(["path", "first query after process start, s (median of 3)", "runs", "load"],
                        [[r["path"], r["first_query_s_median"], r["runs_s"], r["load_before"]]
                         for r in results["cold"]]), flush=True)
    write_json(f"fast_path-{args.parts.replace(',', '+')}-{args.paths.replace(',', '+')}.json", results)


if __name__ == "__main__":
    main()
