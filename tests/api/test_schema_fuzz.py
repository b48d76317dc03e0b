"""Schemathesis against the search API as `imgsearch serve` serves it (the embedded index holding the seed
images): every check, 40 examples per operation. The OpenAPI document must state every rule the server
enforces: a schema-valid request is never refused with a 400, a schema-violating one never accepted, no 5xx,
responses as documented, and methods no route has answer 405."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).with_name("schemathesis.toml")
# A fixed seed keeps CI reproducible; set IMGSEARCH_FUZZ_SEED to explore other inputs.
SEED = os.environ.get("IMGSEARCH_FUZZ_SEED", "20261130")


def test_every_schemathesis_check_passes(api, tmp_path, monkeypatch):
    from imgsearch import fetch
    from imgsearch.errors import UrlFetchError

    def offline(host, port, timeout):  # search by URL: no fuzzed host name reaches DNS, let alone the internet
        raise UrlFetchError(f"could not resolve the host {host}")

    monkeypatch.setattr(fetch, "resolve", offline)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "schemathesis' `st` is not installed (requirements-dev.txt)"
    result = subprocess.run(
        [st, "--config-file", str(CONFIG), "run", f"{api}/openapi.json", "--checks", "all",
         "--max-examples", "40", "--workers", "1", "--seed", SEED, "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Tested: 13" in result.stdout, result.stdout[-3000:]  # every operation was reached
