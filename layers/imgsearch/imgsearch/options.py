"""What a search may ask for, and every limit on it, in one place. Adapters (the API, the CLI) parse their input
into a SearchOptions; the core checks it here, whatever the entry point, and raises InvalidRequestError."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import SEARCH_MODES
from .errors import InvalidRequestError
from .labels import MAX_FILTERS, Filter

MAX_RESULT_WINDOW = 10_000  # Elasticsearch's index.max_result_window and its limit for knn k: page x page_size
# A prefix longer than any key (S3's 1024 bytes, storage.MAX_KEY_BYTES) matches nothing; counted in characters,
# as the OpenAPI document's maxLength counts, which also bounds the bytes copied into every index request.
MAX_PREFIX_LENGTH = 1024
MAX_QUERY_VECTORS = 256  # rows of one query (a query image gives 1 + its R-MAC regions, a few dozen at most)
DEFAULT_PAGE_SIZE = 10


def max_page(page_size: int) -> int:
    """The last page a page size can reach within the result window."""
    return MAX_RESULT_WINDOW // page_size


def check_search(*, min_score: float | None, page: int, page_size: int, mode: str | None,
                 key_prefix: str | None = None, query_vectors: int = 1, min_confidence: float | None = None,
                 filters: tuple[Filter, ...] = ()) -> None:
    """The limits every search obeys (SearchOptions from adapters, SearchRequest to the index): the result
    window, the score range, the mode, the prefix's length, the number of query vectors and of filters."""
    if page < 1:
        raise InvalidRequestError(f"page must be 1 or more, got {page}")
    if page_size < 1:
        raise InvalidRequestError(f"page_size must be 1 or more, got {page_size}")
    if page * page_size > MAX_RESULT_WINDOW:
        raise InvalidRequestError(f"page x page_size must be at most {MAX_RESULT_WINDOW}; got {page} x {page_size}")
    if min_score is not None and not (math.isfinite(min_score) and -1.0 <= min_score <= 1.0):
        raise InvalidRequestError(f"min_score is a cosine similarity between -1 and 1, got {min_score}")
    if min_confidence is not None and not (math.isfinite(min_confidence) and 0.0 <= min_confidence <= 1.0):
        raise InvalidRequestError(f"min_confidence is between 0 and 1, got {min_confidence}")
    if mode is not None and mode not in SEARCH_MODES:
        raise InvalidRequestError(f"mode must be {' or '.join(SEARCH_MODES)}, got {mode!r}")
    if key_prefix is not None and len(key_prefix) > MAX_PREFIX_LENGTH:
        raise InvalidRequestError(f"prefix must be at most {MAX_PREFIX_LENGTH} characters (a key's limit)")
    if not 1 <= query_vectors <= MAX_QUERY_VECTORS:
        raise InvalidRequestError(f"a search takes 1 to {MAX_QUERY_VECTORS} query vectors, got {query_vectors}")
    if sum(len(f.values) for f in filters) > MAX_FILTERS or any(not f.values for f in filters):
        raise InvalidRequestError(f"at most {MAX_FILTERS} filter values in all, and at least one per filter")


@dataclass(frozen=True)
class SearchOptions:
    """min_score: lowest cosine to return; min_confidence: lowest confidence (re-ranks); page is 1-based;
    mode None and rerank None: the settings' default."""

    min_score: float | None = None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    mode: str | None = None  # "exact" | "knn"
    key_prefix: str | None = None
    rerank: bool | None = None
    min_confidence: float | None = None
    filters: tuple[Filter, ...] = ()  # labels.parse_filters: folder, tag.<name>, meta.<name>
    collapse: bool = False  # one hit per group of copies (duplicates.py): the best-ranked of each

    def __post_init__(self):
        check_search(min_score=self.min_score, page=self.page, page_size=self.page_size, mode=self.mode,
                     key_prefix=self.key_prefix, min_confidence=self.min_confidence, filters=self.filters)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size
