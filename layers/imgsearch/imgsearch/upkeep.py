"""The index's whitening over time: which one is current (cached, reloaded only when another process changed
it), and its upkeep after ingest — refit as the index grows (whitening.py's policy), re-derive stale vectors.

Ingest never refits by itself: the extract handler and the CLI call `after_ingest()` as a step of their own,
after the documents are written. A retried event that finds its image already indexed still runs it, so a refit
that failed (e.g. a timeout) is finished by the retry.
"""

from __future__ import annotations

from itertools import islice

import numpy as np

from .index import IndexBackend
from .index.base import WhiteningStore
from .whitening import GROWTH, IDENTITY_ID, MIN_IMAGES, REFIT_UNTIL, DescriptorSet, Whitening, WhiteningStats


class CurrentWhitening:
    """The whitening vectors are made with now: the identity until the index has one (or for unwhitened models)."""

    def __init__(self, store: WhiteningStore, *, dim: int, enabled: bool):
        self.store, self.dim, self.enabled = store, dim, enabled
        self._whitening = Whitening.identity(dim)

    def current_whitening(self) -> Whitening:
        """Asks the store for the id on every call (cheap); loads the matrix only when the id changed."""
        info = self.store.info() if self.enabled else None
        if (info[0] if info else IDENTITY_ID) != self._whitening.id:
            self._whitening = self.store.load() or Whitening.identity(self.dim)
        return self._whitening

    def replace(self, whitening: Whitening) -> None:
        self.store.save(whitening)
        self._whitening = whitening


class WhiteningUpkeep:
    """Fit, refit and re-derive: the policy of *when*, over the index's documents (whitening.py says *how*)."""

    def __init__(self, index: IndexBackend, whitening: CurrentWhitening):
        self.index, self.whitening = index, whitening

    def after_ingest(self) -> None:
        """After writes: refit if the index has grown enough since the last fit, else re-derive vectors left
        behind by another whitening (a refit elsewhere that raced with this write, or one cut short)."""
        if not self.whitening.enabled:
            return
        current = self.whitening.current_whitening()
        self.index.refresh()  # counts must include this write, or a burst of events could end without a refit
        count = self.index.count()
        if count >= MIN_IMAGES and current.images < REFIT_UNTIL and count >= GROWTH * current.images:
            self.refit()
        elif self.index.count(stale_for=current.id):
            self.rewhiten()

    def refit(self) -> dict:
        """Fit the whitening on every indexed image's regions, store it, and re-derive every stored vector."""
        self.index.refresh()  # every document written before this point takes part, and is re-derived below
        stats = WhiteningStats(self.whitening.dim)
        for _, blob in self.index.descriptor_sets():
            stats.add(DescriptorSet.from_bytes(blob).regions)
        if not stats.images:
            return {"whitening": self.whitening.current_whitening().id, "images": 0, "rewhitened": 0}
        fitted = stats.fit()
        self.whitening.replace(fitted)
        return {"whitening": fitted.id, "images": stats.images, "rewhitened": self.rewhiten()}

    def rewhiten(self, batch_size: int = 200) -> int:
        """Re-derive the vectors made with another whitening than the current one; returns how many. Stops if
        a newer refit (another process) takes over: that one re-derives everything."""
        whitening = self.whitening.current_whitening()
        stale = self.index.descriptor_sets(stale_for=whitening.id)
        done = 0
        while batch := list(islice(stale, batch_size)):
            if self.whitening.current_whitening().id != whitening.id:
                break
            vectors = whitening.apply(np.stack([DescriptorSet.from_bytes(blob).raw for _, blob in batch]))
            self.index.set_vectors([(did, vector, whitening.id) for (did, _), vector in zip(batch, vectors)])
            done += len(batch)
        self.index.refresh()
        return done
