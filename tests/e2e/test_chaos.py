"""The chaos run (issue 17), small enough for CI: on each local stack path, 24 uploads with odd keys while the
piece that feeds the index is SIGKILLed twice, Elasticsearch stops for 10 s, and keys are deleted and
overwritten; afterwards the bucket and the index agree (nothing lost, extra or stale), nothing is dead-lettered,
every document carries the current whitening (refits raced on three workers), and `imgsearch sync` finds
nothing to repair. The full run (200 images, 20 s outage) is bench/chaos.py's default; its figures are in
docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import dvd_dir
from servers import REPO


@pytest.mark.parametrize("store, workers", [("localstack", 3), ("minio", 1)])
def test_nothing_is_lost_when_pieces_fail_mid_ingest(store, workers, weights_path, tmp_path):
    dvd_dir()  # the photos uploaded
    report_path = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, str(REPO / "bench/chaos.py"), "--store", store, "--images", "24",
                           "--workers", str(workers),
                           "--deletes", "3", "--overwrites", "3", "--es-outage", "10", "--timeout", "600",
                           "--json", str(report_path)],
                          capture_output=True, text=True, timeout=900)
    assert report_path.exists(), done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    summary = {k: v for k, v in report.items() if k != "timeline"}
    assert report["kills"] == 2 and report["restarts"] >= 2, summary  # the chaos happened, the supervisor coped
    assert report["expected"] == 24 - 3 == report["indexed"], summary
    assert report["lost"] == report["extra"] == report["stale"] == [], summary
    assert report["dead_letters"] == [], summary
    assert report["whitening"] and report["documents_of_an_older_whitening"] == 0, summary
    assert report["sync_found"] == {"indexed": 0, "deleted": 0, "failed": []}, summary
    assert done.returncode == 0, done.stderr[-3000:]
