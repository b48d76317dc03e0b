"""Explore retrieval recipes on the SMVS DVD-covers set (E63 phone photos -> Reference covers).

Stages (each caches its output under bench/quality/cache/, git-ignored):

  features  VGG19 block5_conv4 maps (after ReLU, before the last pool) per image and input size,
            float16 .npy per image, plus the measured network seconds per image.
  local     local features (SIFT / RootSIFT / ORB / AKAZE) per image, stored compactly as they would be
            stored with a document (x,y float16 + uint8 descriptors), plus extraction seconds.
  eval      global recipes (pooling x size x whitening x query tricks) and local re-ranking of the top K,
            from the caches only: no network runs here.

Examples:
  python bench/quality/explore.py features --sizes sq224 224 448 640
  python bench/quality/explore.py local --kind rootsift --max-side 640 --nfeatures 500
  python bench/quality/explore.py eval --out bench/quality/results.md

The exact functions of the recommended recipe live in recipe.py; this script imports them so that what is
measured is what would be ported.
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
sys.path.insert(0, str(HERE))
import recipe  # noqa: E402  (the functions under test)

DATA = Path(os.environ.get("SMVS_DIR", HERE.parents[2] / "shared" / "datasets" / "smvs_dvd_covers"))
if not DATA.is_dir():
    DATA = Path("/work/shared/datasets/smvs_dvd_covers")
WEIGHTS = os.environ.get(
    "IMGSEARCH_VGG19_WEIGHTS", "/work/shared/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
CACHE = HERE / "cache"
SPLITS = ("Reference", "E63")


def ground_truth() -> tuple[list[str], list[str], np.ndarray]:
    """(reference names, query names, index of the relevant reference per query)."""
    refs = sorted(p.name for p in (DATA / "Reference").glob("*.jpg"))
    queries, relevant = [], []
    with open(DATA / "groundtruth.csv") as fh:
        for row in csv.DictReader(fh):
            queries.append(Path(row["query"]).name)
            relevant.append(refs.index(Path(row["relevant"]).name))
    return refs, queries, np.array(relevant)


def load_rgb(path: Path):
    from imgsearch.images import decode_image  # the product's decoder: EXIF, RGB, limits
    return decode_image(path.read_bytes(), max_bytes=50 << 20, max_pixels=50_000_000).image


# ---------------------------------------------------------------------------------------------- features
def size_key(size: str) -> str:
    return f"conv_{size}"


def cmd_features(args):
    refs, queries, _ = ground_truth()
    net = recipe.ConvNet(WEIGHTS)
    for size in args.sizes:
        for split in args.splits:
            names = refs if split == "Reference" else queries
            out = CACHE / size_key(size) / split
            out.mkdir(parents=True, exist_ok=True)
            times_path = out / "times.json"
            times = json.loads(times_path.read_text()) if times_path.exists() else {}
            for name in names:
                target = out / (name[:-4] + ".npy")
                if target.exists():
                    continue
                image = load_rgb(DATA / split / name)
                t0 = time.perf_counter()
                x = recipe.preprocess(image, size)
                fmap = net.conv5_4(x)  # (h, w, 512) float32
                times[name] = time.perf_counter() - t0
                np.save(target, fmap.astype(np.float16))
                times_path.write_text(json.dumps(times))
            print(f"{size} {split}: median {np.median(list(times.values())):.2f} s/img "
                  f"(load avg {os.getloadavg()[0]:.1f})", flush=True)


def load_maps(size: str, split: str, names: list[str]) -> list[np.ndarray]:
    base = CACHE / size_key(size) / split
    return [np.load(base / (n[:-4] + ".npy")).astype(np.float32) for n in names]


def net_seconds(size: str, split: str) -> float:
    times = json.loads((CACHE / size_key(size) / split / "times.json").read_text())
    return float(np.median(list(times.values())))


# ---------------------------------------------------------------------------------------------- local
def local_key(kind: str, max_side: int, nfeatures: int) -> str:
    return f"local_{kind}_{max_side}_{nfeatures}"


def cmd_local(args):
    refs, queries, _ = ground_truth()
    for split in args.splits:
        names = refs if split == "Reference" else queries
        out = CACHE / local_key(args.kind, args.max_side, args.nfeatures) / split
        out.mkdir(parents=True, exist_ok=True)
        times, sizes = {}, {}
        for name in names:
            image = load_rgb(DATA / split / name)
            t0 = time.perf_counter()
            blob = recipe.encode_local(recipe.extract_local(image, args.kind, args.max_side, args.nfeatures))
            times[name] = time.perf_counter() - t0
            sizes[name] = len(blob)
            (out / (name[:-4] + ".bin")).write_bytes(blob)
        (out / "times.json").write_text(json.dumps(times))
        print(f"{args.kind} {args.max_side} {args.nfeatures} {split}: median {np.median(list(times.values()))*1000:.0f} ms,"
              f" mean {np.mean(list(sizes.values())):.0f} bytes/img (load avg {os.getloadavg()[0]:.1f})", flush=True)


def load_local(key: str, split: str, names: list[str]):
    base = CACHE / key / split
    return [recipe.decode_local((base / (n[:-4] + ".bin")).read_bytes()) for n in names]


def local_stats(key: str, split: str) -> tuple[float, float]:
    base = CACHE / key / split
    times = json.loads((base / "times.json").read_text())
    sizes = [p.stat().st_size for p in base.glob("*.bin")]
    return float(np.median(list(times.values()))), float(np.mean(sizes))


# ---------------------------------------------------------------------------------------------- metrics
# ---------------------------------------------------------------------------------------------- global recipes
def describe(maps: list[np.ndarray], pooling: str, layer: str = "conv5_4") -> np.ndarray:
    """Feature maps -> (n, 512) L2-normalised global descriptors."""
    fn = recipe.POOLINGS[pooling]
    out = []
    for fmap in maps:
        if layer == "pool5":
            fmap = recipe.pool5(fmap)
        out.append(fn(fmap))
    return recipe.l2n(np.stack(out))


def region_descriptors(maps: list[np.ndarray], layer: str = "conv5_4") -> list[np.ndarray]:
    return [recipe.region_macs(recipe.pool5(m) if layer == "pool5" else m) for m in maps]


def rmac_whitened(regions: list[np.ndarray], wh) -> np.ndarray:
    """R-MAC with the whitening applied to each region (as in Tolias et al.), then summed and L2'd."""
    return recipe.l2n(np.stack([recipe.l2n(wh.apply(r)).sum(axis=0) for r in regions]))


def inlier_matrix(key: str, refs, queries, ratio=0.8, reproj=8.0) -> np.ndarray:
    """Inliers for every (query, reference) pair, cached, so any global order can be re-ranked offline."""
    path = CACHE / f"inliers_{key}_r{ratio}_p{reproj}.npy"
    if path.exists():
        return np.load(path)
    rl = load_local(key, "Reference", refs)
    ql = load_local(key, "E63", queries)
    mat = np.zeros((len(ql), len(rl)), dtype=np.int32)
    for i, q in enumerate(ql):
        for j, r in enumerate(rl):
            mat[i, j] = recipe.verify(q, r, ratio, reproj)
    np.save(path, mat)
    return mat


def reranked_sim(sim: np.ndarray, inliers: np.ndarray, k: int, t: int) -> np.ndarray:
    """Turn re-ranked orders back into a score matrix (higher = better) so metrics() applies."""
    out = np.zeros_like(sim)
    n = sim.shape[1]
    for i in range(sim.shape[0]):
        order = np.argsort(-sim[i])
        new = recipe.rerank(order, inliers[i, order[:k]], t)
        out[i, new] = np.arange(n, 0, -1)
    return out


def metrics(sim: np.ndarray, relevant: np.ndarray) -> dict:
    """sim: (queries, refs). Ranks of the relevant reference -> top-k and MRR."""
    order = np.argsort(-sim, axis=1)
    ranks = np.array([int(np.where(order[i] == relevant[i])[0][0]) for i in range(len(relevant))])
    return {"top1": np.mean(ranks < 1), "top5": np.mean(ranks < 5), "top10": np.mean(ranks < 10),
            "top20": np.mean(ranks < 20), "mrr": float(np.mean(1.0 / (ranks + 1))), "ranks": ranks}


def fmt(m: dict) -> str:
    return f"{m['top1']:.2f} | {m['top5']:.2f} | {m['top10']:.2f} | {m['top20']:.2f} | {m['mrr']:.3f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("features", help="cache block5_conv4 maps")
    p.add_argument("--sizes", nargs="+", default=["sq224", "448", "640"],
                   help="'sqN' = squash to NxN (the current recipe), 'N' = aspect kept, max side N")
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.set_defaults(func=cmd_features)
    p = sub.add_parser("local", help="cache local features")
    p.add_argument("--kind", default="rootsift", choices=["sift", "rootsift", "orb", "akaze"])
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--nfeatures", type=int, default=500)
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.set_defaults(func=cmd_local)
    p = sub.add_parser("eval", help="evaluate recipes from the caches")
    p.add_argument("--out", default=str(HERE / "results.md"))
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=lambda a: __import__("evaluate").run(a))
    args = parser.parse_args()
    args.func(args)
