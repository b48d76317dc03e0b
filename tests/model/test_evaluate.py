"""The quality harness (`imgsearch eval`) on a dataset made here: the seed images as references, re-encoded
copies of them as queries. Runs the normal ingest and search paths with the real model."""

from __future__ import annotations

import shutil

import pytest

from helpers import reencoded_copy
from imgsearch.errors import NotFoundError
from imgsearch.evaluate import evaluate, format_report


def test_eval_scores_a_dataset_through_the_product_paths(settings, weights_path, seed_paths, tmp_path):
    dataset = tmp_path / "dataset"
    (dataset / "references").mkdir(parents=True)
    (dataset / "queries").mkdir()
    rows = ["query,relevant"]
    for path in seed_paths:
        shutil.copy(path, dataset / "references" / path.name)
        (dataset / "queries" / path.name).write_bytes(reencoded_copy(path))
        rows.append(f"queries/{path.name},references/{path.name}")
    rows.append(f"other/{seed_paths[0].name},references/{seed_paths[0].name}")  # filtered out by the prefix
    (dataset / "groundtruth.csv").write_text("\n".join(rows) + "\n")

    report = evaluate(dataset, settings, query_prefix="queries/", leave_out=True)
    assert (report["queries"], report["references"]) == (len(seed_paths), len(seed_paths))
    assert report["top1"] == report["mrr"] == 1.0  # every copy finds its original first
    # ... confidently and verified, while none of the other (unrelated) photos is; left out, nothing is confident
    assert report["confident_top1"] == report["verified_precision"] == 1.0
    assert report["wrong_verified_per_100_queries"] == report["left_out_wrong_verified_per_100_queries"] == 0
    assert report["left_out_no_confident_match"] == 1.0 and report["confidence_ece"] < 0.1
    assert report["ingest_images_per_s"] > 0 and 0 < report["query_ms_p50"] <= report["query_ms_p95"]
    assert report["whitening"].startswith("none")  # five images: too few to learn a whitening from
    assert "top1" in format_report(report) and report["model_id"] in format_report(report)

    with pytest.raises(NotFoundError, match="no queries"):
        evaluate(dataset, settings, query_prefix="nothing/")
    (dataset / "groundtruth.csv").unlink()
    with pytest.raises(NotFoundError, match="groundtruth.csv"):
        evaluate(dataset, settings)
