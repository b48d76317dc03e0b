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
def size_key(size: str, layer: str = "block5_conv4") -> str:
    return f"conv_{size}" if layer == "block5_conv4" else f"{layer}_{size}"


def cmd_features(args):
    refs, queries, _ = ground_truth()
    net = recipe.ConvNet(WEIGHTS, args.layer)
    for size in args.sizes:
        for split in args.splits:
            names = refs if split == "Reference" else queries
            out = CACHE / size_key(size, args.layer) / split
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


def load_maps(size: str, split: str, names: list[str], layer: str = "block5_conv4") -> list[np.ndarray]:
    base = CACHE / size_key(size, layer) / split
    return [np.load(base / (n[:-4] + ".npy")).astype(np.float32) for n in names]


def net_seconds(size: str, split: str, layer: str = "block5_conv4") -> float:
    times = json.loads((CACHE / size_key(size, layer) / split / "times.json").read_text())
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


def inlier_matrix(key: str, refs, queries, ratio=0.8, reproj=8.0, query_key: str | None = None) -> np.ndarray:
    """Inliers for every (query, reference) pair, cached, so any global order can be re-ranked offline.
    query_key: another local-feature cache for the queries (e.g. more features on the query side)."""
    qk = query_key or key
    path = CACHE / (f"inliers_{key}_r{ratio}_p{reproj}.npy" if qk == key else f"inliers_{key}_q{qk}_r{ratio}_p{reproj}.npy")
    if path.exists():
        return np.load(path)
    rl = load_local(key, "Reference", refs)
    ql = load_local(qk, "E63", queries)
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


# ---------------------------------------------------------------------------------------------- eval
class Identity:
    def apply(self, x):
        return recipe.l2n(x)


def global_scores(refs, queries, ref_size, query_size, pooling, whiten, query_mode, levels=5, shrink=0.7,
                  synth=False, ref_idx=None, query_idx=None, fit_idx=None, query_agg="max", whiten_at="regions"):
    """(queries, refs) cosine similarities of one global recipe.

    ref_size / query_size: one cached size, or several joined by '+' (multi-scale: the reference vector is the
    L2'd sum of the per-scale vectors; the query score is the max (query_agg="max": the best region over all
    query scales) or the sum over query scales of the per-scale best region).
    pooling: mac | gem | rmac.  whiten: none | refs (fitted on the indexed images' descriptors; for rmac on
    their region descriptors; fit_idx picks which references it is fitted on) | refs+synth (plus one
    synthetic photo-like view per indexed image).
    query_mode: global (one query vector) | regionmax (max over the query's R-MAC regions at `levels`).
    whiten_at: regions (whiten each region, then sum: Tolias et al.) | vector (sum the raw regions, whiten the
    512-d result; the whitening is still fitted on regions. Lets a refit re-derive stored vectors cheaply).
    """
    ref_idx = list(range(len(refs))) if ref_idx is None else list(ref_idx)
    query_idx = list(range(len(queries))) if query_idx is None else list(query_idx)
    fit_idx = ref_idx if fit_idx is None else list(fit_idx)
    rsizes, qsizes = ref_size.split("+"), query_size.split("+")
    R = {s: load_maps(s, "Reference", refs) for s in rsizes}
    Q = {s: [m for i, m in enumerate(load_maps(s, "E63", queries)) if i in set(query_idx)] for s in qsizes}
    if pooling != "rmac":
        dr_all = recipe.l2n(sum(describe(R[s], pooling) for s in rsizes))
        wh = Identity() if whiten == "none" else recipe.Whitening.fit(dr_all[fit_idx], shrink)
        dr = wh.apply(dr_all[ref_idx])
        return sum(wh.apply(describe(Q[s], pooling)) @ dr.T for s in qsizes)
    rr = {s: region_descriptors(R[s]) for s in rsizes}
    fit = [rr[s][i] for s in rsizes for i in fit_idx]
    if synth:
        fit += [region_descriptors(load_maps_dir(CACHE / "synth_448" / "Reference", refs))[i] for i in fit_idx]
    wh = Identity() if whiten == "none" else recipe.Whitening.fit(np.concatenate(fit), shrink)
    if whiten_at == "vector":
        raw = recipe.l2n(sum(recipe.l2n(np.stack([rr[s][i].sum(0) for i in ref_idx])) for s in rsizes))
        dr = wh.apply(raw)
    else:
        dr = recipe.l2n(sum(rmac_whitened([rr[s][i] for i in ref_idx], wh) for s in rsizes))
    if query_mode == "global":
        return sum(rmac_whitened(region_descriptors(Q[s]), wh) for s in qsizes) @ dr.T
    per_scale = [np.stack([(recipe.l2n(wh.apply(recipe.region_macs(m, levels))) @ dr.T).max(0) for m in Q[s]])
                 for s in qsizes]
    return np.max(per_scale, axis=0) if query_agg == "max" else np.sum(per_scale, axis=0)


def load_maps_dir(base: Path, names):
    return [np.load(base / (n[:-4] + ".npy")).astype(np.float32) for n in names]


RECIPES = [
    # name, ref size, query size, pooling, whitening, query mode, synth[, whiten_at]
    ("current: squash 224, MAC", "sq224", "sq224", "mac", "none", "global", False),
    ("MAC 448/448, PCAw(refs)", "448", "448", "mac", "refs", "global", False),
    ("GeM 448/448, PCAw(refs)", "448", "448", "gem", "refs", "global", False),
    ("R-MAC 448/448, regionPCAw(refs)", "448", "448", "rmac", "refs", "global", False),
    ("R-MAC 448/448, regionPCAw(refs), query region-max", "448", "448", "rmac", "refs", "regionmax", False),
    ("R-MAC ref sq224 / query 448, regionPCAw(refs)", "sq224", "448", "rmac", "refs", "global", False),
    ("R-MAC ref sq224 / query 448, no whitening, region-max", "sq224", "448", "rmac", "none", "regionmax", False),
    ("R-MAC ref sq224 / query 448, regionPCAw(refs), region-max", "sq224", "448", "rmac", "refs", "regionmax", False),
    ("R-MAC ref 224 / query 448, regionPCAw(refs), region-max", "224", "448", "rmac", "refs", "regionmax", False),
    ("R-MAC ref 320 / query 640, regionPCAw(refs), region-max", "320", "640", "rmac", "refs", "regionmax", False),
    ("R-MAC ref sq224 / query 640, regionPCAw(refs), region-max", "sq224", "640", "rmac", "refs", "regionmax", False),
    ("R-MAC ref sq224 / query 448, regionPCAw(refs+synth), region-max", "sq224", "448", "rmac", "refs", "regionmax", True),
    ("R-MAC ref sq224 / query 448+640, regionPCAw(refs), region-max", "sq224", "448+640", "rmac", "refs", "regionmax", False),
    ("R-MAC ref sq224+320 / query 640, regionPCAw(refs), region-max", "sq224+320", "640", "rmac", "refs", "regionmax", False),
    ("R-MAC ref sq224+320 / query 448+640, regionPCAw(refs), region-max", "sq224+320", "448+640", "rmac", "refs", "regionmax", False),
    ("R-MAC ref sq224 / query 448, PCAw(refs) on the vector, region-max", "sq224", "448", "rmac", "refs", "regionmax", False, "vector"),
    ("R-MAC ref sq224+320 / query 640, PCAw(refs) on the vector, region-max", "sq224+320", "640", "rmac", "refs", "regionmax", False, "vector"),
    ("**DEFAULT** R-MAC ref sq224+320 / query 448+640, PCAw(refs) on the vector, region-max", "sq224+320", "448+640", "rmac", "refs", "regionmax", False, "vector"),
]


def cmd_eval(args):
    refs, queries, rel = ground_truth()
    inl = inlier_matrix(args.local, refs, queries)
    lines = ["| recipe | global top-1 | top-5 | top-10 | top-20 | MRR | +rerank top-1 | top-5 | top-10 | MRR |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs, qs, pool, wh, mode, synth, *rest in RECIPES:
        try:
            sim = global_scores(refs, queries, rs, qs, pool, wh, mode, synth=synth, whiten_at=(rest or ["regions"])[0])
        except FileNotFoundError as exc:
            print(f"skip {name}: {exc}")
            continue
        g = metrics(sim, rel)
        r = metrics(reranked_sim(sim, inl, args.k, args.t), rel)
        lines.append(f"| {name} | {fmt(g)} | {r['top1']:.2f} | {r['top5']:.2f} | {r['top10']:.2f} | {r['mrr']:.3f} |")
        print(lines[-1], flush=True)
    # re-ranking variants on the default global recipe
    sim = global_scores(refs, queries, "sq224+320", "448+640", "rmac", "refs", "regionmax", whiten_at="vector")
    lines += ["", "Re-ranking variants on the default global recipe (global top-20 recall 0.93):", "",
              "| local features (stored / query) | bytes/doc | K | T | top-1 | top-5 | MRR | alone vs all 100 refs: top-1 |",
              "|---|---|---|---|---|---|---|---|"]
    for key, qkey in [("local_rootsift_640_500", None), ("local_sift_640_500", None),
                      ("local_rootsift_640_300", "local_rootsift_640_500")]:
        if not (CACHE / key).exists():
            continue
        mat = inlier_matrix(key, refs, queries, query_key=qkey)
        alone = metrics(mat.astype(float), rel)["top1"]
        nbytes = local_stats(key, "Reference")[1]
        for k in (10, 20):
            for t in (10, 15, 20):
                r = metrics(reranked_sim(sim, mat, k, t), rel)
                lines.append(f"| {key[6:]} / {(qkey or key)[6:]} | {nbytes:.0f} | {k} | {t} | {r['top1']:.2f} | "
                             f"{r['top5']:.2f} | {r['mrr']:.3f} | {alone:.2f} |")
    print("\n".join(lines[-20:]))
    Path(args.out).write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- timing
def cmd_timing(args):
    """Ingest and query costs of one recipe, end to end on this machine (wall and CPU seconds, load noted)."""
    import cv2

    refs, queries, rel = ground_truth()
    n = args.n
    net = recipe.ConvNet(WEIGHTS)
    for size in args.ref_size.split("+"):  # warm up (tracing) at every size
        net.conv5_4(recipe.preprocess(load_rgb(DATA / "Reference" / refs[0]), size))
    for size in args.query_size.split("+"):
        net.conv5_4(recipe.preprocess(load_rgb(DATA / "E63" / queries[0]), size))
    rows = {}

    def clock(label, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        rows.setdefault(label, []).append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    # ingest: network at the reference size + R-MAC pooling + local features (decode excluded: same for all)
    stored = []
    for name in refs[:n]:
        image = load_rgb(DATA / "Reference" / name)
        clock("ingest: network + R-MAC at " + args.ref_size, lambda: [
            recipe.rmac(net.conv5_4(recipe.preprocess(image, s))) for s in args.ref_size.split("+")])
        blob = clock("ingest: local features", lambda: recipe.encode_local(
            recipe.extract_local(image, args.kind, args.max_side, args.nfeatures)))
        stored.append(blob)
    # query: network at the query size + region descriptors + whitening; then the local re-ranking of K stored docs
    wh = recipe.Whitening.fit(np.random.default_rng(0).normal(size=(2000, 512)).astype(np.float32))
    base = CACHE / local_key(args.kind, args.max_side, args.nfeatures) / "Reference"
    all_blobs = [(base / (r[:-4] + ".bin")).read_bytes() for r in refs]
    order = np.argsort(-global_scores(refs, queries, args.ref_size, args.query_size, "rmac", "refs", "regionmax"), axis=1)
    for qi, name in enumerate(queries[:n]):
        image = load_rgb(DATA / "E63" / name)
        fmaps = clock("query: network at " + args.query_size, lambda: [
            net.conv5_4(recipe.preprocess(image, s)) for s in args.query_size.split("+")])
        clock("query: regions + whitening", lambda: [recipe.l2n(wh.apply(recipe.region_macs(f, 5))) for f in fmaps])
        cands = order[qi, :args.k]  # the recipe's real global top K (from the caches)

        def rerank_one():
            q = recipe.extract_local(image, args.kind, args.max_side, args.nfeatures)
            inliers = recipe.verify_batch(q, [recipe.decode_local(all_blobs[j]) for j in cands], min_matches=args.t)
            return recipe.rerank(order[qi], inliers, args.t)
        clock(f"query: re-rank K={args.k} (query local features + {args.k} verifications)", rerank_one)
    lines = [f"load average during the run: {os.getloadavg()} on {os.cpu_count()} cores", "",
             "| step | n | wall p50 | wall p95 | CPU p50 | CPU p95 |", "|---|---|---|---|---|---|"]
    for label, vals in rows.items():
        w = np.array([v[0] for v in vals]) * 1000
        c = np.array([v[1] for v in vals]) * 1000
        lines.append(f"| {label} | {len(vals)} | {np.percentile(w, 50):.0f} ms | {np.percentile(w, 95):.0f} ms | "
                     f"{np.percentile(c, 50):.0f} ms | {np.percentile(c, 95):.0f} ms |")
    lines.append(f"\nstored local features: {np.mean([len(b) for b in stored]):.0f} bytes per image (mean)")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def cmd_nettime(args):
    """Network seconds per image at each input size, one process, sequential (E63 photos, 1600x1200)."""
    _, queries, _ = ground_truth()
    net = recipe.ConvNet(WEIGHTS)
    images = [load_rgb(DATA / "E63" / q) for q in queries[:args.n]]
    lines = [f"load average before: {os.getloadavg()} on {os.cpu_count()} cores", "",
             "| input | feature map | wall p50 | CPU p50 |", "|---|---|---|---|"]
    for size in args.sizes:
        net.conv5_4(recipe.preprocess(images[0], size))  # trace
        wall, cpu = [], []
        for image in images:
            t0, c0 = time.perf_counter(), time.process_time()
            fmap = net.conv5_4(recipe.preprocess(image, size))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        lines.append(f"| {size} | {fmap.shape[0]}x{fmap.shape[1]} | {np.median(wall):.2f} s | {np.median(cpu):.2f} s |")
        print(lines[-1], flush=True)
    lines.append(f"\nload average after: {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("features", help="cache block5_conv4 maps")
    p.add_argument("--sizes", nargs="+", default=["sq224", "448", "640"],
                   help="'sqN' = squash to NxN (the current recipe), 'N' = aspect kept, max side N")
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.add_argument("--layer", default="block5_conv4", help="also block4_conv4 (512 channels, stride 8)")
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
    p.add_argument("--local", default="local_rootsift_640_500", help="local-feature cache key for re-ranking")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--t", type=int, default=15)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("timing", help="end-to-end ingest and query costs of one recipe")
    p.add_argument("--ref-size", default="sq224")
    p.add_argument("--query-size", default="448")
    p.add_argument("--kind", default="rootsift")
    p.add_argument("--max-side", type=int, default=640)
    p.add_argument("--nfeatures", type=int, default=500)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--t", type=int, default=15)
    p.add_argument("-n", type=int, default=30)
    p.add_argument("--out", default="")
    p.set_defaults(func=cmd_timing)
    p = sub.add_parser("nettime", help="network cost per input size")
    p.add_argument("--sizes", nargs="+", default=["sq224", "224", "320", "448", "640", "800"])
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--out", default="")
    p.set_defaults(func=cmd_nettime)
    args = parser.parse_args()
    args.func(args)
