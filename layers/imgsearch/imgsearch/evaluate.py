"""Retrieval quality on a dataset with ground truth, through the normal ingest and search paths.

A dataset folder holds images and `groundtruth.csv` with columns `query,relevant` (paths relative to the
folder; one relevant image per row, several rows per query allowed). The relevant images' folders are
indexed into a throw-away index (a temporary embedded index, or a temporary Elasticsearch index that is
deleted afterwards), then every query is searched.
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from .config import Settings
from .errors import NotFoundError


def evaluate(dataset: Path, settings: Settings, *, query_prefix: str | None = None, depth: int = 10,
             **search_options) -> dict:
    from .options import SearchOptions
    from .pipeline import ImageSearch
    from .storage import FolderStorage

    truth = _ground_truth(dataset, query_prefix)
    reference_dirs = sorted({Path(r).parent.as_posix() for relevant in truth.values() for r in relevant})
    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-") as scratch:
        settings = settings.replace(data_dir=Path(scratch), es_index=f"imgsearch-eval-{uuid.uuid4().hex[:8]}")
        search = ImageSearch.open(settings)
        try:
            started, indexed = time.perf_counter(), 0
            for folder in reference_dirs:
                report = search.ingester.index_source(FolderStorage(dataset / folder))
                search.upkeep.after_ingest()
                indexed += report.indexed
            ingest_seconds = time.perf_counter() - started  # the whitening's fit included
            whitening = search.whitening.current_whitening()
            search.embedder.embed_query(_first_image(dataset, truth))  # warm the model: latency is per query
            ranks, latencies = [], []
            for query, relevant in sorted(truth.items()):
                data = (dataset / query).read_bytes()
                t0 = time.perf_counter()
                hits = search.searcher.search_image(data, SearchOptions(page_size=depth, **search_options)).hits
                latencies.append((time.perf_counter() - t0) * 1000)
                found = [Path(h.bucket).name + "/" + h.key for h in hits]
                ranks.append(next((i + 1 for i, key in enumerate(found) if key in relevant), None))
        finally:
            search.index.delete_index()
            search.close()
    n = len(ranks)
    return {
        "dataset": str(dataset), "queries": n, "references": indexed, "model_id": search.embedder.model_id,
        "backend": settings.backend, "whitening": f"{whitening.id} ({whitening.images} images)",
        "rerank": settings.rerank and f"top {settings.rerank_depth}",
        "top1": round(sum(r == 1 for r in ranks if r) / n, 3),
        "top5": round(sum(1 for r in ranks if r and r <= 5) / n, 3),
        f"top{depth}": round(sum(1 for r in ranks if r) / n, 3), "mrr": round(sum(1 / r for r in ranks if r) / n, 3),
        "ingest_images_per_s": round(indexed / ingest_seconds, 2) if ingest_seconds else None,
        "query_ms_p50": round(statistics.median(latencies), 1), "query_ms_p95": round(_p95(latencies), 1),
    }


def format_report(report: dict) -> str:
    lines = [f"{report['queries']} queries against {report['references']} references "
             f"({report['model_id']}, {report['backend']}, re-ranking: {report['rerank'] or 'off'}, "
             f"whitening: {report['whitening']})"]
    lines += [f"  {name:<20} {value}" for name, value in report.items()
              if name not in ("dataset", "queries", "references", "model_id", "backend", "whitening", "rerank")]
    return "\n".join(lines)


def _ground_truth(dataset: Path, query_prefix: str | None) -> dict[str, set[str]]:
    path = dataset / "groundtruth.csv"
    if not path.is_file():
        raise NotFoundError(f"no groundtruth.csv in {dataset} (columns: query,relevant)")
    truth: dict[str, set[str]] = defaultdict(set)
    with path.open(newline="") as rows:
        for row in csv.DictReader(rows):
            if not query_prefix or row["query"].startswith(query_prefix):
                truth[row["query"]].add(row["relevant"])
    if not truth:
        raise NotFoundError(f"no queries in {path}" + (f" starting with {query_prefix!r}" if query_prefix else ""))
    return truth


def _first_image(dataset: Path, truth: dict[str, set[str]]):
    from PIL import Image

    with Image.open(dataset / next(iter(truth))) as image:
        return image.convert("RGB")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
