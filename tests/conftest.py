"""Shared fixtures: the real model (skipped with a reason when the weights file is absent), seed images,
and settings pointing at a throw-away data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import SEED_DIR, WEIGHTS, reencoded_copy  # noqa: F401  (reencoded_copy: re-exported)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def weights_path() -> str:
    if not WEIGHTS.is_file():
        pytest.skip(f"VGG19 ImageNet weights not found at {WEIGHTS}")
    return str(WEIGHTS)


@pytest.fixture(scope="session")
def embedder(weights_path):
    """The real VGG19 with ImageNet weights, loaded once per test session."""
    from imgsearch.embedder import Embedder

    return Embedder(weights_path)


@pytest.fixture(scope="session")
def seed_paths() -> list[Path]:
    paths = sorted(SEED_DIR.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no seed images in {SEED_DIR}")
    return paths


@pytest.fixture
def settings(tmp_path):
    from imgsearch.config import Settings

    return Settings.from_env({}, data_dir=tmp_path / "data", weights=str(WEIGHTS) if WEIGHTS.is_file() else None)
