"""Shared fixtures: the real model, seed images, and settings pointing at a throw-away data directory. A missing
weights file, int8 model or seed folder skips the tests that need it, with the reason, or fails them in CI
(servers.unavailable).

`embedder` is the product's default runtime: int8 (OpenVINO) when the int8 model is built (scripts/setup does;
in CI it must be), else fp32 (TensorFlow). `fp32_embedder` and `int8_embedder` are the two runtimes by name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import INT8_MODEL, WEIGHTS, reencoded_copy, seed_images, weights_file  # noqa: F401 (re-exported)
from servers import strict, unavailable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def weights_path() -> str:
    return str(weights_file())


@pytest.fixture(scope="session")
def fp32_embedder(weights_path):
    """The real VGG19 with ImageNet weights on TensorFlow (the reference path), loaded once per test session."""
    from imgsearch.embedder import Embedder

    return Embedder(weights_path, precision="fp32")


@pytest.fixture(scope="session")
def int8_embedder(weights_path):
    """The same weights quantised to int8 (`imgsearch build-model`), on OpenVINO."""
    from imgsearch.embedder import Embedder

    if INT8_MODEL is None:
        unavailable("no int8 model: set IMGSEARCH_INT8_MODEL (scripts/setup builds it)")
    return Embedder(weights_path, precision="int8", int8_model=INT8_MODEL)


@pytest.fixture(scope="session")
def embedder(request, weights_path):
    """The product's default runtime (see the module docstring)."""
    return request.getfixturevalue("int8_embedder" if INT8_MODEL or strict() else "fp32_embedder")


@pytest.fixture(scope="session")
def seed_paths() -> list[Path]:
    return seed_images()


@pytest.fixture
def settings(tmp_path):
    from imgsearch.config import Settings

    return Settings.from_env({}, data_dir=tmp_path / "data", weights=str(WEIGHTS) if WEIGHTS.is_file() else None,
                             int8_model=INT8_MODEL)


# -- the browser: Debian's Chromium, driven by Selenium through Debian's chromedriver (tests/api, tests/e2e) --
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() or not Path(CHROMEDRIVER).is_file():
        unavailable(f"browser test needs {CHROMIUM} and chromedriver "
                    "(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
    except ImportError:
        unavailable("selenium is not installed (requirements-dev.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
