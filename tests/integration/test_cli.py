"""The imgsearch command end to end, as a user runs it: separate processes, the real model, each backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import reencoded_copy

IMGSEARCH = str(Path(sys.executable).with_name("imgsearch"))


def run(*args, env, check=True):
    result = subprocess.run([IMGSEARCH, *args], env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"imgsearch {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture
def cli_env(index_settings, weights_path):
    env = {**os.environ, "IMGSEARCH_VGG19_WEIGHTS": weights_path, "IMGSEARCH_DATA_DIR": str(index_settings.data_dir),
           "IMGSEARCH_BACKEND": index_settings.backend, "IMGSEARCH_ES_URL": ",".join(index_settings.es_urls),
           "IMGSEARCH_ES_INDEX": index_settings.es_index, "IMGSEARCH_SEARCH_MODE": "knn"}
    return env


def test_index_then_search_finds_each_copys_original(cli_env, seed_paths, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in seed_paths:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "readme.txt").write_text("not an image")
    cli_env["IMGSEARCH_ALLOWED_BUCKETS"] = str(folder)  # `search`, another process, links the hits of this folder
    first = run("index", str(folder), "--json", env=cli_env)
    report = json.loads(first.stdout)
    assert report["indexed"] == len(seed_paths)
    assert [f["key"] for f in report["failed"]] == ["readme.txt"] and "not an image" in report["failed"][0]["reason"]

    again = json.loads(run("index", str(folder), "--json", env=cli_env).stdout)
    assert again["indexed"] == 0 and again["unchanged"] == len(seed_paths)

    for path in seed_paths:
        query = tmp_path / f"copy-{path.name}"
        query.write_bytes(reencoded_copy(path))
        result = json.loads(run("search", str(query), "--json", "--top-k", "3", env=cli_env).stdout)
        assert result["hits"][0]["key"] == path.name
        assert result["hits"][0]["score"] > result["hits"][1]["score"]
        assert result["hits"][0]["url"].startswith("file://")

    (folder / seed_paths[0].name).unlink()
    synced = json.loads(run("sync", str(folder), "--json", env=cli_env).stdout)
    assert synced["deleted"] == 1
    stats = json.loads(run("stats", env=cli_env).stdout)
    assert stats["documents"] == len(seed_paths) - 1


def test_search_options_and_errors(cli_env, seed_paths, tmp_path):
    run("index", str(seed_paths[0].parent), env=cli_env)
    page2 = json.loads(run("search", str(seed_paths[0]), "--json", "--page", "2", "--page-size", "2",
                           env=cli_env).stdout)
    assert page2["page"] == 2 and len(page2["hits"]) == 2 and page2["hits"][0]["key"] != seed_paths[0].name
    strict = json.loads(run("search", str(seed_paths[0]), "--json", "--min-score", "0.99", env=cli_env).stdout)
    assert [h["key"] for h in strict["hits"]] == [seed_paths[0].name]
    text = run("search", str(seed_paths[0]), env=cli_env).stdout
    assert seed_paths[0].name in text.splitlines()[1]
    top = json.loads(run("search", str(seed_paths[0]), "--json", "--filter", "folder=/", env=cli_env).stdout)
    assert top["total"] == len(seed_paths) and top["hits"][0]["folder"] == ""
    elsewhere = json.loads(run("search", str(seed_paths[0]), "--json", "--filter", "folder=cats/", "--filter",
                               "tag.color=red", env=cli_env).stdout)
    assert elsewhere["hits"] == [] and elsewhere["total"] == 0
    unfiltered = run("search", str(seed_paths[0]), "--filter", "colour=red", env=cli_env, check=False)
    assert unfiltered.returncode == 1 and "tag.<name>" in unfiltered.stderr
    assert json.loads(run("duplicates", env=cli_env).stdout)["groups"] == []  # distinct photos: no copies
    collapsed = json.loads(run("search", str(seed_paths[0]), "--json", "--collapse", env=cli_env).stdout)
    assert collapsed["total"] == len(seed_paths)

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    failed = run("search", str(bad), env=cli_env, check=False)
    assert failed.returncode == 1 and "not an image" in failed.stderr
    missing = run("search", str(tmp_path / "absent.jpg"), env=cli_env, check=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
