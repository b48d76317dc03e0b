"""Shared fixtures: the real model (skipped with a reason when the weights file is absent), seed images,
and settings pointing at a throw-away data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import reencoded_copy  # noqa: F401  (re-exported for test modules)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGSEARCH_SHARED_DIR", REPO.parent / "shared"))
WEIGHTS = Path(os.environ.get("IMGSEARCH_VGG19_WEIGHTS")
               or SHARED / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
SEED_DIR = SHARED / "fixtures" / "seed-images"
DVD_DIR = SHARED / "datasets" / "smvs_dvd_covers"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"VGG19 ImageNet weights not found at {WEIGHTS} (see DESIGN.md): tests of meaning skipped")


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
