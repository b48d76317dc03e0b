"""The corpus through `imgsearch index`, a separate process as a user runs it: the bad files are listed with
their reasons and skipped, the good ones indexed, what was indexed before kept; the run itself succeeds (exit 0,
as the README says), and only a run that cannot happen at all exits 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from badinput import corpus

IMGSEARCH = str(Path(sys.executable).with_name("imgsearch"))
REJECTED = [c for c in corpus.cases() if c.outcome == corpus.REJECTED]
INDEXED = [c for c in corpus.cases() if c.outcome == corpus.INDEXED]
# NUL: no file name can hold one, so corpus.write leaves it out; the 1025-byte key is a path a folder can hold.
WRITTEN_KEYS = [k for k in corpus.key_cases() if "\x00" not in k.key]


def imgsearch(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([IMGSEARCH, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, weights_path, seed_paths):
    """A folder with one photo, indexed; then the corpus added and the folder indexed again (JSON report), and
    once more as text; then a search for the first photo."""
    folder = tmp_path_factory.mktemp("photos").resolve()
    env = {**os.environ, "IMGSEARCH_VGG19_WEIGHTS": weights_path, "IMGSEARCH_BACKEND": "embedded",
           "IMGSEARCH_DATA_DIR": str(tmp_path_factory.mktemp("badinput-cli")), "IMGSEARCH_ALLOWED_BUCKETS": str(folder)}
    (folder / "kept.jpg").write_bytes(seed_paths[0].read_bytes())
    first = imgsearch("index", str(folder), "--json", env=env)
    corpus.write(folder)
    second = imgsearch("index", str(folder), "--json", env=env)
    third = imgsearch("index", str(folder), env=env)
    search = imgsearch("search", str(folder / "kept.jpg"), "--json", "--top-k", "3", env=env)
    return {"folder": folder, "env": env, "first": first, "second": second, "third": third, "search": search}


def report(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_corpus_run_exits_0_and_indexes_exactly_the_good_files(runs):
    assert report(runs["first"])["indexed"] == 1
    second = report(runs["second"])
    assert second["unchanged"] == 1  # the photo indexed before: kept, not re-embedded
    assert second["indexed"] == len(INDEXED) + sum(k.outcome == corpus.INDEXED for k in WRITTEN_KEYS)
    assert second["deleted"] == 0


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.name)
def test_a_bad_file_is_reported_with_its_reason(runs, case):
    failed = {f["key"]: f["reason"] for f in report(runs["second"])["failed"]}
    assert case.key in failed and re.search(case.reason, failed[case.key]), failed.get(case.key)


def test_only_the_bad_files_and_the_overlong_key_fail(runs):
    failed = {f["key"]: f["reason"] for f in report(runs["second"])["failed"]}
    too_long = [k for k in WRITTEN_KEYS if k.outcome == corpus.REJECTED]
    assert set(failed) == {c.key for c in REJECTED} | {k.key for k in too_long}
    for case in too_long:
        assert re.search(case.reason, failed[case.key])


def test_the_text_report_lists_each_skipped_file_again_and_exits_0(runs):
    third = runs["third"]
    assert third.returncode == 0, third.stderr[-3000:]
    lines = third.stdout.splitlines()
    assert lines[0].startswith(f"indexed 0, relabelled 0, unchanged {1 + report(runs['second'])['indexed']}, "
                               f"deleted 0, failed {len(report(runs['second'])['failed'])};")
    for case in REJECTED:
        assert any(line.startswith(f"  failed: {case.key}: ") for line in lines[1:]), case.key


def test_the_photo_indexed_before_is_still_found_first(runs):
    hits = report(runs["search"])["hits"]
    assert hits[0]["key"] == "kept.jpg" and hits[0]["score"] > 0.99


def test_a_run_that_cannot_happen_exits_1(runs):
    missing = imgsearch("index", str(runs["folder"] / "no-such-folder"), env=runs["env"])
    assert missing.returncode == 1 and "is not a folder" in missing.stderr
