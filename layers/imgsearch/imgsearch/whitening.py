"""PCA-whitening of the global descriptors, learned from the indexed images and stored with the index.

Raw R-MAC vectors share a few strong directions (what every image has: texture, colour, layout), so plain
cosine is dominated by them. Whitening re-weights the directions by how much they vary over the indexed
images; measured on phone photos of DVD covers it moves the right cover into the top 20 for 92 in 100 photos
instead of 75 (docs/quality.md).

Stored vector = whiten(raw); query vectors are whitened with the same matrix. A whitening fitted on a small
sample misjudges its weak directions, and images outside the sample then look alike ("hubs"), so the
eigenvalues are softened twice: raised to -SHRINK/2 instead of -1/2, after adding REGULARISATION times their
mean. Each document keeps its raw descriptors (`DescriptorSet`), so a refit re-derives every stored vector with
one matrix product, without the network.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

DIM = 512
SHRINK = 0.7  # eigenvalue power -0.35: full whitening (1.0) over-amplifies directions estimated from few images
REGULARISATION = 1.0  # add this times the mean eigenvalue: keeps images outside the fitted sample from becoming hubs
# When to (re)fit, automatically after ingest: once the index holds MIN_IMAGES, then whenever it has grown by
# GROWTH since the last fit (so the fit always covers at least 80% of the images: one on half of them cost
# up to 0.07 top-1), until REFIT_UNTIL images, where the statistics have settled (`imgsearch refit` still works).
MIN_IMAGES = 16
GROWTH = 1.25
REFIT_UNTIL = 5_000
IDENTITY_ID = "none"  # the whitening before there is anything to learn from: raw vectors, unit length
_MAGIC = b"DS1"  # DescriptorSet blob format marker


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / (np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-12)


@dataclass(frozen=True)
class Whitening:
    """apply(x) = unit((unit(x) - mean) @ projection). `id` names it: every document records the id it was
    whitened with, so stale vectors can be found and re-derived after a refit."""

    mean: np.ndarray  # (512,) float32
    projection: np.ndarray  # (512, 512) float32
    id: str
    images: int = 0  # how many indexed images it was fitted on

    @classmethod
    def identity(cls, dim: int = DIM) -> "Whitening":
        return cls(np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32), IDENTITY_ID)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, 512) or (512,) -> the same shape, whitened, unit rows."""
        return unit_rows((unit_rows(vectors) - self.mean) @ self.projection)

    def to_bytes(self) -> bytes:
        return self.mean.astype("<f4").tobytes() + self.projection.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, whitening_id: str, images: int, dim: int = DIM) -> "Whitening":
        values = np.frombuffer(blob, dtype="<f4")
        if values.size != dim + dim * dim:
            raise ValueError(f"a whitening for {dim}-d vectors has {dim + dim * dim} floats, this one {values.size}")
        return cls(values[:dim].copy(), values[dim:].reshape(dim, dim).copy(), whitening_id, images)


class WhiteningStats:
    """Sufficient statistics of region descriptors (count, sum, sum of outer products), added image by image."""

    def __init__(self, dim: int = DIM):
        self.images = 0
        self.count = 0
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, regions: np.ndarray) -> None:
        x = unit_rows(regions).astype(np.float64)  # (R, 512)
        self.images += 1
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def fit(self, shrink: float = SHRINK, regularisation: float = REGULARISATION) -> Whitening:
        if self.count < 2:
            raise ValueError("a whitening needs descriptors of at least one image")
        mean = self.total / self.count
        covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)  # (512, 512)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues = np.maximum(eigenvalues, 0) + regularisation * max(eigenvalues.mean(), 1e-12)
        projection = eigenvectors * np.power(eigenvalues, -0.5 * shrink)[None, :]
        digest = hashlib.sha256(mean.astype("<f4").tobytes() + projection.astype("<f4").tobytes()).hexdigest()
        return Whitening(mean.astype(np.float32), projection.astype(np.float32), f"pcaw-{digest[:16]}", self.images)


@dataclass(frozen=True)
class DescriptorSet:
    """What a document keeps to be re-whitened later: its raw (unwhitened) vector and the region descriptors
    the whitening is fitted on. Stored as float16 (about 36 KB for the ~35 regions of the default recipe)."""

    raw: np.ndarray  # (512,) unit length
    regions: np.ndarray  # (R, 512) unit rows

    def to_bytes(self) -> bytes:
        rows = np.concatenate([self.raw[None], self.regions]).astype("<f2")  # (1 + R, 512)
        return _MAGIC + struct.pack("<HH", len(self.regions), rows.shape[1]) + rows.tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "DescriptorSet":
        if blob[:3] != _MAGIC:
            raise ValueError("not a descriptor blob")
        regions, dim = struct.unpack("<HH", blob[3:7])
        rows = np.frombuffer(blob, dtype="<f2", offset=7).reshape(1 + regions, dim).astype(np.float32)
        return cls(raw=rows[0], regions=rows[1:])
