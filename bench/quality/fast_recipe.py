"""Which one-pass-per-size recipe keeps E63 quality at a fraction of the cost? (issue 18)

Caches VGG19 block5_conv4 maps per runtime and input size (bench/quality/cache/, git-ignored), then scores
recipes from the caches with the product's own functions (embedder.region_maxima, whitening, local_features):

  python bench/quality/fast_recipe.py maps --runtime int8 --split Reference --sizes sq224 320
  python bench/quality/fast_recipe.py maps --runtime int8 --split E63 --sizes sq224 320 448 512 640
  python bench/quality/fast_recipe.py eval --runtime int8

Guard against tuning to E63: every recipe is also scored on two disjoint halves of the queries (odd and even
numbers) and with the whitening fitted on only part of the references (what an index between refits has).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SMVS_DIR", HERE.parents[2] / "shared" / "datasets" / "smvs_dvd_covers"))
CACHE = HERE / "cache"


def names(split: str) -> list[str]:
    return sorted(p.name for p in (DATA / split).glob("*.jpg"))


def relevant() -> np.ndarray:
    refs = names("Reference")
    out = {}
    with open(DATA / "groundtruth.csv") as fh:
        for row in csv.DictReader(fh):
            out[Path(row["query"]).name] = refs.index(Path(row["relevant"]).name)
    return np.array([out[q] for q in names("E63")])


def load_image(path: Path):
    from imgsearch.images import decode_image

    return decode_image(path.read_bytes(), max_bytes=50 << 20, max_pixels=50_000_000, draft_size=224).image


def cmd_maps(args):
    from imgsearch.embedder import Embedder

    embedder = Embedder(os.environ["IMGSEARCH_VGG19_WEIGHTS"], precision=args.runtime,
                        int8_model=Path(os.environ.get("IMGSEARCH_INT8_MODEL", CACHE / "vgg19-int8.xml")))
    for size in args.sizes:
        out = CACHE / f"maps_{args.runtime}_{size}" / args.split
        out.mkdir(parents=True, exist_ok=True)
        for name in names(args.split):
            target = out / (name[:-4] + ".npy")
            if not target.exists():
                np.save(target, embedder.feature_maps([load_image(DATA / args.split / name)], size)[0].astype(np.float16))
        print(f"{args.runtime} {size} {args.split} done (load {os.getloadavg()[0]:.1f})", flush=True)


def maps(runtime: str, size: str, split: str) -> list[np.ndarray]:
    base = CACHE / f"maps_{runtime}_{size}" / split
    return [np.load(base / (n[:-4] + ".npy")).astype(np.float32) for n in names(split)]


def local(split: str):
    """RootSIFT features as the product extracts them, cached."""
    from imgsearch import local_features

    path = CACHE / f"rootsift_{split}.npz"
    if not path.exists():
        blobs = [local_features.encode(local_features.extract(load_image(DATA / split / n))) for n in names(split)]
        np.savez(path, *[np.frombuffer(b, np.uint8) for b in blobs])
    with np.load(path) as z:
        return [local_features.decode(z[f"arr_{i}"].tobytes()) for i in range(len(z.files))]


class Inliers:
    """Inlier counts per (query, reference) pair, computed when first needed and cached on disk."""

    def __init__(self):
        self.path = CACHE / "inliers_pairs.json"
        self.known = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.q, self.r = local("E63"), local("Reference")

    def counts(self, qi: int, refs: list[int]) -> list[int]:
        from imgsearch import local_features

        todo = [r for r in refs if f"{qi},{r}" not in self.known]
        if todo:
            for r, c in zip(todo, local_features.inliers(self.q[qi], [self.r[r] for r in todo], min_matches=15)):
                self.known[f"{qi},{r}"] = c
        return [self.known[f"{qi},{r}"] for r in refs]

    def save(self):
        self.path.write_text(json.dumps(self.known))


def recipe_vectors(runtime, doc_sizes, query_sizes, doc_levels=3, query_levels=5):
    from imgsearch.embedder import raw_vector, region_maxima

    def raw_and_regions(split):
        per_size = [[region_maxima(m, doc_levels) for m in maps(runtime, s, split)] for s in doc_sizes]
        raws = [raw_vector(regions) for regions in zip(*per_size)]
        return np.stack(raws), [np.concatenate(regions) for regions in zip(*per_size)]

    doc_raw, doc_regions = raw_and_regions("Reference")
    q_raw, _ = raw_and_regions("E63")
    q_regions = [np.concatenate(rs) for rs in zip(*[[region_maxima(m, query_levels) for m in maps(runtime, s, "E63")]
                                                    for s in query_sizes])] if query_sizes else [r[None] for r in q_raw]
    return doc_raw, doc_regions, q_raw, q_regions


def compact(queries: np.ndarray, n_regions: int, how: str) -> np.ndarray:
    """A few vectors standing for a whitened query (row 0: itself, then its regions): what Elasticsearch's kNN
    clauses search with; the candidates they find are then scored with every row."""
    from imgsearch.index.es_strategies import compact_queries
    from imgsearch.whitening import unit_rows

    regions = queries[1:]
    if how == "self":
        return queries[:1]
    if how == "self+mean":
        return np.stack([queries[0], unit_rows(regions.sum(0))])
    return compact_queries(queries, n_regions)  # "self+spread": what the Elasticsearch backend sends


def evaluate(vectors, fitted_on, inl: Inliers, depth=20, min_inliers=15, candidates=None):
    from imgsearch.whitening import WhiteningStats

    doc_raw, doc_regions, q_raw, q_regions = vectors
    stats = WhiteningStats()
    for i in fitted_on:
        stats.add(doc_regions[i])
    w = stats.fit()
    docs = w.apply(doc_raw)  # (100, 512)
    truth = relevant()
    ranks_global, ranks_rerank = [], []
    for qi in range(len(q_raw)):
        queries = w.apply(np.concatenate([q_raw[qi][None], q_regions[qi]]))
        scores = (docs @ queries.T).max(axis=1)
        if candidates:  # Elasticsearch: only documents some compact vector finds among its k nearest
            k, n, how = candidates
            found = np.unique(np.argsort(-(docs @ compact(queries, n, how).T), axis=0)[:k].ravel())
            scores = np.where(np.isin(np.arange(len(docs)), found), scores, -2.0)
        order = list(np.argsort(-scores, kind="stable"))
        ranks_global.append(order.index(truth[qi]))
        counts = inl.counts(qi, order[:depth])
        verified = sorted((i for i, c in enumerate(counts) if c >= min_inliers), key=lambda i: (-counts[i], i))
        new = [order[i] for i in verified] + [order[i] for i in range(depth) if counts[i] < min_inliers] + order[depth:]
        ranks_rerank.append(new.index(truth[qi]))
    g, r = np.array(ranks_global), np.array(ranks_rerank)
    return {"global_top1": float(np.mean(g < 1)), "global_top20": float(np.mean(g < 20)),
            "top1": float(np.mean(r < 1)), "top1_odd": float(np.mean(r[0::2] < 1)), "top1_even": float(np.mean(r[1::2] < 1))}


RECIPES = {  # name: (document sizes, query region sizes)
    "A sq224+320 / 448+640 (before)": (("sq224", "320"), ("448", "640")),
    "B sq224+320 / 512": (("sq224", "320"), ("512",)),
    "C sq224+320 / 448": (("sq224", "320"), ("448",)),
    "D sq224+320 / 640": (("sq224", "320"), ("640",)),
    "E 320 / 512": (("320",), ("512",)),
    "F sq224 / 448": (("sq224",), ("448",)),
    "G 320 / 448": (("320",), ("448",)),
    "H sq224 / 512": (("sq224",), ("512",)),
}


def cmd_candidates(args):
    """The Elasticsearch path: kNN clauses with a few compact vectors, each finding its k nearest; every
    candidate then scored with all query rows. k is given as a share of the 100 references."""
    inl = Inliers()
    doc_sizes, query_sizes = RECIPES[next(n for n in RECIPES if n.startswith(args.recipe))]
    vectors = recipe_vectors(args.runtime, doc_sizes, query_sizes)
    print("| compact query | vectors | k per vector | global top-20 | re-ranked top-1 | odd / even |")
    print("|---|---|---|---|---|---|")
    for how, n in (("self", 1), ("self+mean", 2), ("self+spread", 3), ("self+spread", 4)):
        for k in (5, 10, 20):
            m = evaluate(vectors, range(100), inl, depth=args.depth, candidates=(k, n, how))
            print(f"| {how} | {n} | {k} | {m['global_top20']:.2f} | {m['top1']:.2f} | {m['top1_odd']:.2f} / "
                  f"{m['top1_even']:.2f} |", flush=True)
    inl.save()


def cmd_eval(args):
    inl = Inliers()
    rng = np.random.default_rng(0)
    partial = [sorted(rng.choice(100, 64, replace=False)) for _ in range(3)]
    print(f"re-ranking depth {args.depth}")
    print("| recipe | global top-1 | global top-20 | re-ranked top-1 | odd / even queries | whitening on 64 of 100 (3 draws) |")
    print("|---|---|---|---|---|---|")
    for name, (doc_sizes, query_sizes) in RECIPES.items():
        if args.only and not name.startswith(tuple(args.only)):
            continue
        vectors = recipe_vectors(args.runtime, doc_sizes, query_sizes)
        full = evaluate(vectors, range(100), inl, depth=args.depth)
        parts = [evaluate(vectors, p, inl, depth=args.depth)["top1"] for p in partial]
        inl.save()
        print(f"| {name} | {full['global_top1']:.2f} | {full['global_top20']:.2f} | **{full['top1']:.2f}** | "
              f"{full['top1_odd']:.2f} / {full['top1_even']:.2f} | {' '.join(f'{p:.2f}' for p in parts)} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("maps")
    p.add_argument("--runtime", default="int8")
    p.add_argument("--split", required=True)
    p.add_argument("--sizes", nargs="+", required=True)
    p.set_defaults(run=cmd_maps)
    p = sub.add_parser("eval")
    p.add_argument("--runtime", default="int8")
    p.add_argument("--only", nargs="*")
    p.add_argument("--depth", type=int, default=20, help="re-rank this many candidates")
    p.set_defaults(run=cmd_eval)
    p = sub.add_parser("candidates")
    p.add_argument("--runtime", default="int8")
    p.add_argument("--recipe", required=True, help="the recipe's letter")
    p.add_argument("--depth", type=int, default=20, help="re-rank this many candidates")
    p.set_defaults(run=cmd_candidates)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
