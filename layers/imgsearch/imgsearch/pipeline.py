"""ImageSearch: the front every adapter opens. It builds the parts once per process and hands them out:

- storages: bucket -> Storage (storages.py)
- ingester: objects -> documents (ingest.py)
- upkeep:   the whitening's refits, a step callers run after ingest (upkeep.py)
- searcher: image -> hits (searching.py)

docs/architecture.md draws them and the two data paths through them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import local_features
from .backlog import ingest_backlog
from .config import Settings
from .errors import ImgSearchError
from .index import IndexBackend, open_index
from .ingest import Ingester
from .searching import Searcher
from .storages import Storages
from .upkeep import CurrentWhitening, WhiteningUpkeep

if TYPE_CHECKING:
    from .embedder import Embedder


class ImageSearch:
    """One embedder, one index and its whitening, any number of buckets or folders."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, index: IndexBackend | None = None):
        if embedder is None:
            from .embedder import Embedder  # the network runtime: loaded by the processes that embed, when they start

            embedder = Embedder.from_settings(settings)
        if settings.rerank:
            local_features.preload()
        self.settings = settings
        self.embedder = embedder
        self.index = index or open_index(settings, model_id=embedder.model_id, dim=embedder.dim)
        self.whitening = CurrentWhitening(self.index.whitenings, dim=embedder.dim, enabled=embedder.whitened)
        self.storages = Storages(settings)
        self.ingester = Ingester(settings, embedder, self.index, self.storages, self.whitening)
        self.upkeep = WhiteningUpkeep(self.index, self.whitening)
        self.searcher = Searcher(settings, embedder, self.index, self.storages, self.whitening)

    @classmethod
    def open(cls, settings: Settings, **overrides) -> "ImageSearch":
        """Build the service and make sure its index exists (created if missing, refused if incompatible).
        overrides: embedder=, index= (tests, benchmarks)."""
        service = cls(settings, **overrides)
        service.index.ensure_index()
        return service

    def health(self) -> dict:
        """The index's own report ({"ok": bool, "backend": name, ...}); never raises."""
        try:
            return self.index.health()
        except ImgSearchError as exc:  # e.g. the embedded index cannot even open its file
            return {"ok": False, "backend": getattr(self.index, "name", "?"), "error": str(exc)}

    def stats(self) -> dict:
        """The index's size and model, its whitening (the last refit: its id and how many images it was fitted
        on) and, where the queues are configured, how far ingest is behind (backlog.py)."""
        whitening = self.whitening.current_whitening()
        report = {"documents": self.index.count(), "model_id": self.embedder.model_id, "backend": self.index.name,
                  "whitening": whitening.id, "whitening_images": whitening.images}
        backlog = ingest_backlog(self.settings)
        if backlog is not None:
            report["ingest"] = backlog
        return report

    def close(self) -> None:
        self.index.close()
