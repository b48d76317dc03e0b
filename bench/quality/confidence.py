"""Confidence, "verified" and "no match" (issue 15): what the re-ranker knows, against the truth.

  python bench/quality/confidence.py collect   # every E63 query's 40 best candidates, as the product verifies them
  python bench/quality/confidence.py report    # fit, cross-validate, choose thresholds, write the plot

`collect` indexes SMVS's references through the normal ingest path (embedded index, default runtime), then for
each query keeps what the Searcher sees for its re-ranking head: cosine and the geometric Match of every
candidate. `report` fits the confidence's logistic model on half of the covers and measures on the other half
(both ways: 2-fold by cover number), so no cover's own photo decides its constants.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SMVS_DIR", HERE.parents[2] / "shared" / "datasets" / "smvs_dvd_covers"))
CACHE = HERE / "cache"
RECORDS = CACHE / "confidence_e63.json"
DEPTH = 40


def cmd_collect(args) -> None:
    from imgsearch import local_features
    from imgsearch.config import Settings
    from imgsearch.images import decode_image
    from imgsearch.index import SearchRequest
    from imgsearch.pipeline import ImageSearch
    from imgsearch.storage import FolderStorage

    truth = {}
    with open(DATA / "groundtruth.csv") as fh:
        for row in csv.DictReader(fh):
            if row["query"].startswith(args.queries):
                truth[row["query"]] = Path(row["relevant"]).name
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        search = ImageSearch.open(Settings.from_env(data_dir=Path(scratch)))
        search.ingester.index_source(FolderStorage(DATA / "Reference"))
        search.upkeep.after_ingest()
        for n, (query, right) in enumerate(sorted(truth.items())):
            data = (DATA / query).read_bytes()
            image = decode_image(data, max_bytes=50 << 20, max_pixels=50_000_000, draft_size=224).image
            vectors = search.whitening.current_whitening().apply(search.embedder.embed_query(image))
            found = search.index.search(SearchRequest(vector=vectors, page_size=DEPTH, mode="exact",
                                                      with_local_features=True)).hits
            matches = local_features.verify(local_features.extract(image),
                                            [local_features.decode(h.document.local_features) for h in found])
            records.append({"query": query, "right": right, "candidates": [
                {"key": h.document.key, "cosine": h.score, "inliers": m.inliers, "matches": m.matches,
                 "homography": None if m.homography is None else m.homography.tolist(),
                 "query_spread": m.query_spread, "candidate_spread": m.candidate_spread,
                 "outline": None if m.outline is None else m.outline.tolist(), "width": h.document.width, "height": h.document.height}
                for h, m in zip(found, matches)]})
            print(f"{n + 1}/{len(truth)} {query}", file=sys.stderr)
        search.close()
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    RECORDS.write_text(json.dumps(records))
    print(f"wrote {RECORDS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    p = commands.add_parser("collect")
    p.add_argument("--queries", default="E63/")
    p.set_defaults(run=cmd_collect)
    p = commands.add_parser("report")
    p.add_argument("--explore", action="store_true", help="print the raw measurements' distributions")
    p.add_argument("--min-inliers", type=int, default=15, help="verified's minimum (IMGSEARCH_RERANK_MIN_INLIERS)")
    p.add_argument("--plot", default=str(HERE.parents[1] / "docs" / "confidence-reliability.png"))
    p.set_defaults(run=cmd_report)
    args = parser.parse_args()
    args.run(args)


def load() -> list[dict]:
    return json.loads(RECORDS.read_text())


def features(c: dict) -> dict:
    """The per-candidate measurements the product's confidence module reads."""
    from imgsearch.local_features import Match

    h = None if c["homography"] is None else np.array(c["homography"])
    return {"cosine": c["cosine"], "match": Match(inliers=c["inliers"], matches=c["matches"], homography=h,
                                                  query_spread=c["query_spread"],
                                                  candidate_spread=c["candidate_spread"],
                                                  outline=None if c["outline"] is None else np.array(c["outline"]))}


def explore(args) -> None:
    """Distributions of the raw measurements for right and wrong candidates (to choose the checks)."""
    from imgsearch import confidence as conf

    rows = []
    for record in load():
        for rank, c in enumerate(record["candidates"]):
            f = features(c)
            m = f["match"]
            rows.append((c["key"] == record["right"], rank, c["cosine"], m.inliers, m.matches,
                         m.query_spread, m.candidate_spread, conf.plausible(m)))
    right = [r for r in rows if r[0]]
    wrong = [r for r in rows if not r[0]]
    print(f"{len(right)} right candidates, {len(wrong)} wrong")
    for name, col in (("cosine", 2), ("inliers", 3), ("matches", 4), ("query_spread", 5), ("cand_spread", 6)):
        for label, group in (("right", right), ("wrong", wrong)):
            v = np.array([r[col] for r in group], dtype=float)
            print(f"  {name:<13} {label}: " + " ".join(f"p{q}={np.percentile(v, q):.3f}" for q in (5, 25, 50, 75, 95, 99))
                  + f" max={v.max():.3f}")
    for t in (8, 10, 12, 15, 20, 25, 30):
        wrong_t = [r for r in wrong if r[3] >= t]
        print(f"inliers>={t}: right {sum(r[3] >= t for r in right)}, wrong {len(wrong_t)}, wrong plausible "
              f"{sum(r[7] for r in wrong_t)}, right plausible {sum(r[3] >= t and r[7] for r in right)}")
        for r in sorted(wrong_t, key=lambda r: -r[3])[:6]:
            print(f"     wrong: inl={r[3]} matches={r[4]} qs={r[5]:.3f} cs={r[6]:.3f} plausible={r[7]} cos={r[2]:.3f}")


def design(records: list[dict]) -> tuple[np.ndarray, np.ndarray, list]:
    """Rows (cosine, log1p(geometric inliers)) and labels of every candidate; which query each row belongs to."""
    from imgsearch import confidence as conf

    x, y, owner = [], [], []
    for q, record in enumerate(records):
        for c in record["candidates"]:
            f = features(c)
            x.append((f["cosine"], np.log1p(conf.geometric_inliers(f["match"]))))
            y.append(c["key"] == record["right"])
            owner.append(q)
    return np.array(x), np.array(y, dtype=float), owner


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """[intercept, w...] by Newton's method on the log-likelihood; a small ridge keeps nearly separable data
    finite. A slope that comes out negative is fixed at 0 and the rest refitted: the confidence must grow with
    every measurement, so that ordering by it is monotonic (searching.Searcher relies on it)."""
    free = np.ones(x.shape[1] + 1, dtype=bool)
    while True:
        a = np.hstack([np.ones((len(x), 1)), x])[:, free]
        w = np.zeros(a.shape[1])
        for _ in range(100):
            p = 1 / (1 + np.exp(-a @ w))
            step = np.linalg.solve((a * (p * (1 - p))[:, None]).T @ a + ridge * np.eye(len(w)),
                                   a.T @ (p - y) + ridge * w)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        full = np.zeros(len(free))
        full[free] = w
        if (full[1:] >= 0).all():
            return full
        free[1 + np.argmin(full[1:])] = False


def scored(records: list[dict], w: np.ndarray, min_inliers: int) -> list[dict]:
    """Each query as the product would answer it with weights w: present (the right cover indexed) and left out."""
    from imgsearch import confidence as conf

    out = []
    for record in records:
        hits = []
        for rank, c in enumerate(record["candidates"]):
            f = features(c)
            z = w[0] + w[1] * f["cosine"] + w[2] * np.log1p(conf.geometric_inliers(f["match"]))
            hits.append({"right": c["key"] == record["right"], "confidence": float(1 / (1 + np.exp(-z))),
                         "verified": conf.verified(f["match"], min_inliers), "rank": rank})
        hits.sort(key=lambda h: (-h["confidence"], h["rank"]))
        out.append({"present": hits, "left_out": [h for h in hits if not h["right"]]})
    return out


def cover_number(record: dict) -> int:
    return int(Path(record["right"]).stem)


def cross_validated(records: list[dict], min_inliers: int) -> tuple[list[dict], list[np.ndarray]]:
    """2-fold by cover number (odd / even): each half is scored with weights fitted on the other half."""
    out, weights = [], []
    for fold in (0, 1):
        train = [r for r in records if cover_number(r) % 2 != fold]
        test = [r for r in records if cover_number(r) % 2 == fold]
        x, y, _ = design(train)
        w = fit_logistic(x, y)
        weights.append(w)
        out += scored(test, w, min_inliers)
    return out, weights


def summary(answers: list[dict], threshold: float, top: int = 10) -> dict:
    n = len(answers)
    shown = [h for a in answers for key in ("present", "left_out") for h in a[key][:top]]
    ece, bins = calibration(shown)
    return {
        "queries": n,
        "top1": sum(a["present"][0]["right"] for a in answers) / n,
        "right_first_and_confident": sum(a["present"][0]["right"] and a["present"][0]["confidence"] >= threshold
                                         for a in answers) / n,
        "left_out_no_confident_match": sum(not a["left_out"] or a["left_out"][0]["confidence"] < threshold
                                           for a in answers) / n,
        "present_confident_but_wrong": sum(not a["present"][0]["right"] and a["present"][0]["confidence"] >= threshold
                                           for a in answers) / n,
        "wrong_verified_per_100_present": 100 * sum(h["verified"] and not h["right"] for a in answers
                                                    for h in a["present"]) / n,
        "wrong_verified_per_100_left_out": 100 * sum(h["verified"] for a in answers for h in a["left_out"]) / n,
        "right_verified": sum(h["verified"] and h["right"] for a in answers for h in a["present"]) / n,
        "ece_top10": ece, "bins": bins,
    }


def calibration(hits: list[dict], edges=np.linspace(0, 1, 11)) -> tuple[float, list]:
    """Expected calibration error over these hits, and (bin, count, mean confidence, accuracy) per bin."""
    conf = np.array([h["confidence"] for h in hits])
    right = np.array([h["right"] for h in hits], dtype=float)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, len(edges) - 2)
    bins, ece = [], 0.0
    for b in range(len(edges) - 1):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(conf[inside].mean() - right[inside].mean())
            bins.append((f"{edges[b]:.1f}-{edges[b + 1]:.1f}", int(inside.sum()), float(conf[inside].mean()),
                         float(right[inside].mean())))
    return float(ece), bins


def plot(bins: list, path: Path) -> None:
    """A reliability diagram as a PNG (Pillow only): accuracy per confidence bin against the diagonal."""
    from PIL import Image, ImageDraw

    size, pad = 420, 50
    image = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([pad, pad, pad + size, pad + size], outline="black")
    draw.line([pad, pad + size, pad + size, pad], fill="gray")  # perfect calibration
    for label, count, mean_conf, accuracy in bins:
        low = float(label.split("-")[0])
        x0, x1 = pad + low * size, pad + (low + 0.1) * size
        draw.rectangle([x0 + 3, pad + size - accuracy * size, x1 - 3, pad + size], fill=(70, 120, 200))
        draw.ellipse([pad + mean_conf * size - 3, pad + size - mean_conf * size - 3,
                      pad + mean_conf * size + 3, pad + size - mean_conf * size + 3], fill="orange")
        draw.text((x0 + 4, pad + size + 5), str(count), fill="black")
    draw.text((pad, 15), "confidence bin (x) vs share right (bars), mean confidence (dots), hits per bin below; line: ideal",
              fill="black")
    image.save(path)


def cmd_report(args) -> None:
    if args.explore:
        return explore(args)
    from imgsearch import confidence as conf

    records = load()
    answers, weights = cross_validated(records, args.min_inliers)
    print("fold weights [intercept, cosine, log1p(inliers)]:", [np.round(w, 2).tolist() for w in weights])
    print(f"{'threshold':>9} {'right 1st & confident':>22} {'left out: no match':>19} {'confident & wrong':>18}")
    for t in np.arange(0.1, 0.95, 0.05):
        s = summary(answers, t)
        print(f"{t:9.2f} {s['right_first_and_confident']:22.2f} {s['left_out_no_confident_match']:19.2f} "
              f"{s['present_confident_but_wrong']:18.2f}")
    s = summary(answers, conf.CONFIDENT)
    print(json.dumps({k: v for k, v in s.items() if k != "bins"}, indent=1))
    for row in s["bins"]:
        print("  bin %s: n=%d mean confidence %.2f, right %.2f" % row)
    x, y, _ = design(records)
    print("weights fitted on all covers (the product's constants):", np.round(fit_logistic(x, y), 2).tolist())
    plot(s["bins"], Path(args.plot))
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
