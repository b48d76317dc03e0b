"""How the whitening behaves when it was fitted on only part of the indexed images (the state between two
automatic refits), and how its regularisation changes that. Uses explore.py's cached feature maps.

    .venv/bin/python bench/quality/whitening_sample.py

Prints the re-ranked top-1 (= global recall@20 with RootSIFT, K=20, T=15) over all 100 covers, for whitenings
fitted on all 100 references, the first 80, the first 64, the first 50 and the last 50.
"""

from __future__ import annotations

import numpy as np

import explore
import recipe

FITS = {"all": range(100), "first 80": range(80), "first 64": range(64), "first 50": range(50),
        "last 50": range(50, 100)}
SETTINGS = [(0.7, 1e-6), (0.7, 0.3), (0.7, 1.0), (0.7, 3.0), (1.0, 3.0)]  # (shrink, regularisation)
RECIPES = [(("sq224",), ("448",)), (("sq224", "320"), ("448", "640"))]


class Regularised:
    """recipe.Whitening with `regularisation` times the mean eigenvalue added to every eigenvalue (as the product)."""

    def __init__(self, regions: np.ndarray, shrink: float, regularisation: float):
        x = recipe.l2n(regions.astype(np.float64))
        self.mean = x.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov((x - self.mean).T))
        eigenvalues = np.maximum(eigenvalues, 0) + regularisation * eigenvalues.mean()
        self.projection = eigenvectors * np.power(eigenvalues, -0.5 * shrink)[None, :]

    def apply(self, x: np.ndarray) -> np.ndarray:
        return recipe.l2n((recipe.l2n(x) - self.mean) @ self.projection)


def main() -> None:
    refs, queries, relevant = explore.ground_truth()
    inliers = explore.inlier_matrix("local_rootsift_640_500", refs, queries)
    print("| documents / queries | shrink | regularisation | " + " | ".join(FITS) + " |")
    print("|---|---|---|" + "---|" * len(FITS))
    for ref_sizes, query_sizes in RECIPES:
        ref_regions = {s: [recipe.region_macs(m) for m in explore.load_maps(s, "Reference", refs)] for s in ref_sizes}
        query_regions = [np.concatenate([recipe.region_macs(m, recipe.QUERY_LEVELS) for m in maps])
                         for maps in zip(*[explore.load_maps(s, "E63", queries) for s in query_sizes])]
        raw = recipe.l2n(sum(recipe.l2n(np.stack([r.sum(axis=0) for r in ref_regions[s]])) for s in ref_sizes))
        for shrink, regularisation in SETTINGS:
            cells = []
            for fit in FITS.values():
                whitening = Regularised(np.concatenate([ref_regions[s][i] for s in ref_sizes for i in fit]),
                                        shrink, regularisation)
                documents = whitening.apply(raw)
                sim = np.stack([(whitening.apply(q) @ documents.T).max(axis=0) for q in query_regions])
                cells.append(explore.metrics(explore.reranked_sim(sim, inliers, 20, 15), relevant)["top1"])
            print(f"| {'+'.join(ref_sizes)} / {'+'.join(query_sizes)} | {shrink} | {regularisation} | "
                  + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
