"""What a search may ask for, and every limit on it, in one place. Adapters (the API, the CLI) parse their input
into a SearchOptions; the core checks it here, whatever the entry point, and raises InvalidRequestError."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import SEARCH_MODES
from .errors import InvalidRequestError

MAX_RESULT_WINDOW = 10_000  # Elasticsearch's index.max_result_window and its limit for knn k: page x page_size
DEFAULT_PAGE_SIZE = 10


def check_search(*, min_score: float | None, page: int, page_size: int, mode: str | None) -> None:
    """The limits every search obeys (SearchOptions from adapters, SearchRequest to the index)."""
    if page < 1:
        raise InvalidRequestError(f"page must be 1 or more, got {page}")
    if page_size < 1:
        raise InvalidRequestError(f"page_size must be 1 or more, got {page_size}")
    if page * page_size > MAX_RESULT_WINDOW:
        raise InvalidRequestError(f"page x page_size must be at most {MAX_RESULT_WINDOW}; got {page} x {page_size}")
    if min_score is not None and not (math.isfinite(min_score) and -1.0 <= min_score <= 1.0):
        raise InvalidRequestError(f"min_score is a cosine similarity between -1 and 1, got {min_score}")
    if mode is not None and mode not in SEARCH_MODES:
        raise InvalidRequestError(f"mode must be {' or '.join(SEARCH_MODES)}, got {mode!r}")


@dataclass(frozen=True)
class SearchOptions:
    """min_score: lowest cosine to return; page is 1-based; mode None and rerank None: the settings' default."""

    min_score: float | None = None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    mode: str | None = None  # "exact" | "knn"
    key_prefix: str | None = None
    rerank: bool | None = None

    def __post_init__(self):
        check_search(min_score=self.min_score, page=self.page, page_size=self.page_size, mode=self.mode)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size
