"""In CI a missing prerequisite fails the tests that need it; elsewhere it skips them, saying why (issue 14)."""

from __future__ import annotations

import pytest

import helpers
import servers
from servers import strict, unavailable

FAILED, SKIPPED = pytest.fail.Exception, pytest.skip.Exception


@pytest.mark.parametrize("environ, expected", [
    ({}, False), ({"CI": ""}, False), ({"CI": "false"}, False), ({"CI": "False"}, False), ({"CI": "0"}, False),
    ({"CI": "no"}, False), ({"CI": "true"}, True), ({"CI": "1"}, True), ({"CI": "yes"}, True),
    ({"IMGSEARCH_REQUIRE_SERVERS": "1"}, True), ({"IMGSEARCH_REQUIRE_SERVERS": "1", "CI": "false"}, True),
    ({"IMGSEARCH_REQUIRE_SERVERS": "0", "CI": "true"}, False),
])
def test_ci_is_strict_and_ci_false_is_not(environ, expected):
    assert strict(environ) is expected


@pytest.fixture(params=["strict", "lenient"])
def mode(request, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("IMGSEARCH_REQUIRE_SERVERS", "1" if request.param == "strict" else "0")
    return FAILED if request.param == "strict" else SKIPPED


def test_unavailable_fails_in_ci_and_skips_elsewhere(mode):
    with pytest.raises(mode, match="moto_server did not start"):
        unavailable("moto_server did not start")


@pytest.mark.parametrize("attribute, needed, named", [
    ("WEIGHTS", helpers.weights_file, "weights"), ("SEED_DIR", helpers.seed_images, "seed images"),
    ("DVD_DIR", helpers.dvd_dir, "dataset"),
])
def test_missing_shared_files_fail_in_ci(mode, monkeypatch, tmp_path, attribute, needed, named):
    monkeypatch.setattr(helpers, attribute, tmp_path / "not-there")
    with pytest.raises(mode, match=named):
        needed()


def test_present_shared_files_are_returned(monkeypatch, tmp_path):
    (tmp_path / "w.h5").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    monkeypatch.setattr(helpers, "WEIGHTS", tmp_path / "w.h5")
    monkeypatch.setattr(helpers, "SEED_DIR", tmp_path)
    monkeypatch.setattr(helpers, "DVD_DIR", tmp_path)
    assert helpers.weights_file() == tmp_path / "w.h5" and helpers.seed_images() == [tmp_path / "a.jpg"]
    assert helpers.dvd_dir() == tmp_path


def test_no_test_skips_on_its_own():
    """Every skip for something missing goes through servers.unavailable (which fails in CI)."""
    offenders = [f"{path.relative_to(servers.REPO)}:{n}" for path in sorted((servers.REPO / "tests").rglob("*.py"))
                 if path.name != "servers.py" and path.name != "test_prerequisites.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if "pytest.skip(" in line or "importorskip(" in line or "mark.skip" in line]
    assert offenders == []
