"""Retrieval quality on a dataset with ground truth, through the normal ingest and search paths.

A dataset folder holds images and `groundtruth.csv` with columns `query,relevant` (paths relative to the
folder; one relevant image per row, several rows per query allowed). The relevant images' folders are
indexed into a throw-away index (a temporary embedded index, or a temporary Elasticsearch index that is
deleted afterwards), then every query is searched. With leave_out, every query is searched a second time as if
its relevant images were not indexed (excluded from the search): what a user sees when the thing in the photo
is not in the index. With re-ranking on, the report says how far the confidence can be trusted: its expected
calibration error, how often a confident or verified hit is wrong, and, left out, how often the answer is an
honest "no confident match".
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
             leave_out: bool = False, **search_options) -> dict:
    from .index import doc_id
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
            ranks, latencies, answers, left_out_answers = [], [], [], []
            options = SearchOptions(page_size=depth, **search_options)
            for query, relevant in sorted(truth.items()):
                data = (dataset / query).read_bytes()
                t0 = time.perf_counter()
                hits = search.searcher.search_image(data, options).hits
                latencies.append((time.perf_counter() - t0) * 1000)
                answer = [(h, Path(h.bucket).name + "/" + h.key in relevant) for h in hits]
                answers.append(answer)
                ranks.append(next((i + 1 for i, (_, right) in enumerate(answer) if right), None))
                if leave_out:
                    excluded = tuple(doc_id(str((dataset / r).parent.resolve()), Path(r).name) for r in relevant)
                    hits = search.searcher.search_image(data, options, exclude_ids=excluded).hits
                    left_out_answers.append([(h, False) for h in hits])
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
        **trust(answers, left_out_answers),
    }


def trust(answers: list[list], left_out: list[list]) -> dict:
    """How far confidence and verified can be trusted, from (hit, is right) pairs per query: present (the right
    images indexed) and, if run, left out. Empty without re-ranking (no confidence)."""
    from .confidence import CONFIDENT

    every = [pair for answer in answers + left_out for pair in answer]
    if not every or every[0][0].confidence is None:
        return {}
    n = len(answers)
    verified = [right for answer in answers for hit, right in answer if hit.verified]
    report = {
        "confidence_ece": round(expected_calibration_error([(h.confidence, right) for h, right in every]), 3),
        "confident_line": CONFIDENT,
        "confident_top1": round(sum(bool(a) and a[0][1] and a[0][0].confidence >= CONFIDENT
                                                       for a in answers) / n, 3),
        "confident_but_wrong_top1": round(sum(bool(a) and not a[0][1] and a[0][0].confidence >= CONFIDENT
                                              for a in answers) / n, 3),
        "verified_precision": round(sum(verified) / len(verified), 3) if verified else None,
        "wrong_verified_per_100_queries": round(100 * (len(verified) - sum(verified)) / n, 1),
    }
    if left_out:
        report.update({
            "left_out_no_confident_match": round(sum(not a or a[0][0].confidence < CONFIDENT
                                                     for a in left_out) / len(left_out), 3),
            "left_out_wrong_verified_per_100_queries": round(100 * sum(h.verified for a in left_out for h, _ in a)
                                                             / len(left_out), 1),
        })
    return report


def expected_calibration_error(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by the hits in each."""
    total, error = len(pairs), 0.0
    for b in range(bins):
        inside = [(c, right) for c, right in pairs if b / bins <= c < (b + 1) / bins or (b == bins - 1 and c == 1)]
        if inside:
            error += len(inside) / total * abs(sum(c for c, _ in inside) / len(inside)
                                               - sum(right for _, right in inside) / len(inside))
    return error


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
