"""The one ImageSearch of a process, shared by the function apps (extract, search) and the local runners.

Built from the environment on first use (the model and clients are expensive: once per container), or handed
in by whoever built one already (`imgsearch serve`, the worker, tests). Thread-safe: the API serves threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .config import Settings

if TYPE_CHECKING:
    from .pipeline import ImageSearch

_lock = threading.Lock()
_service: ImageSearch | None = None
_settings: Settings | None = None


def settings() -> Settings:
    """The service's settings, or (before it is built) the environment's, read once. ConfigError if unusable."""
    global _settings
    with _lock:
        if _service is not None:
            return _service.settings
        if _settings is None:
            _settings = Settings.from_env()
        return _settings


def get() -> ImageSearch:
    """The ImageSearch of this process, built on first use (its index created if missing)."""
    global _service
    current = settings()
    with _lock:
        if _service is None:
            from .pipeline import ImageSearch  # not at import: the search app's cold start stays small

            _service = ImageSearch.open(current)
        return _service


def use(service: ImageSearch | None) -> None:
    """Serve this ImageSearch from now on (None: build one from the environment on next use)."""
    global _service, _settings
    with _lock:
        _service, _settings = service, None


def reset() -> None:
    use(None)
