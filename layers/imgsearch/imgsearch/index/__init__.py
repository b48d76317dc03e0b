"""Index backends behind one contract (base.IndexBackend); open_index picks one from the settings."""

from __future__ import annotations

from ..config import Settings
from .base import IndexBackend, IndexEntry, ScoredDocument, SearchPage, SearchRequest
from .document import ImageDocument, doc_id

__all__ = ["ImageDocument", "IndexBackend", "IndexEntry", "ScoredDocument", "SearchPage", "SearchRequest", "doc_id",
           "open_index"]


def open_index(settings: Settings, *, model_id: str, dim: int = 512) -> IndexBackend:
    if settings.backend == "elasticsearch":
        from .elasticsearch import ElasticsearchIndex

        return ElasticsearchIndex.from_settings(settings, model_id=model_id, dim=dim)
    from .embedded import EmbeddedIndex

    return EmbeddedIndex(settings.data_dir, dim=dim, model_id=model_id)
