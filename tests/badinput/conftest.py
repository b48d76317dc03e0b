"""The bad-input corpus (corpus.py), written once per session into a folder the entries read."""

from __future__ import annotations

from pathlib import Path

import pytest

from badinput import corpus


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """Every file case under its key, and every key case a file name can hold, each holding a valid image."""
    folder = tmp_path_factory.mktemp("corpus").resolve()
    corpus.write(folder)
    return folder
