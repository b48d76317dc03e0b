"""Copies flagged at ingest (issue 16, item 2), measured through the product's own ingest path (real model, the
default runtime, the embedded index), with what it costs.

  python bench/quality/duplicates.py   # prints the table docs/quality.md quotes; writes bench/results/duplicates.json

1. The 100 SMVS references (distinct DVD covers) are indexed twice, side by side in one process: with copies
   flagged and without (IMGSEARCH_FLAG_DUPLICATES), for the ingest cost.
2. False copies: every reference checked against all the others (duplicates.find_original, its own key left out).
3. Copies found: four kinds of copy of each reference (re-encoded at half size, a 70% centre crop, a quarter-size
   thumbnail at quality 40, brightened with a white border) are indexed; each should name its own reference.
4. Photos: the 100 E63 phone photos are indexed; a photo of a cover is not a copy of its file (reported: how
   often the rule calls one a copy anyway).
The rule's own numbers (inliers, stretch, perspective) of the nearest candidate are kept in the JSON.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SMVS_DIR", HERE.parents[2] / "shared" / "datasets" / "smvs_dvd_covers"))
OUT = HERE.parents[1] / "bench" / "results" / "duplicates.json"


def copies(data: bytes) -> dict[str, bytes]:
    from PIL import Image, ImageEnhance, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
    w, h = image.size

    def jpeg(img, quality):
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=quality)
        return out.getvalue()

    return {
        "reencoded_half": jpeg(image.resize((w // 2, h // 2), Image.BILINEAR), 60),
        "crop_70": jpeg(image.crop((int(w * .15), int(h * .15), int(w * .85), int(h * .85))), 85),
        "thumbnail_q40": jpeg(image.resize((max(1, w // 4), max(1, h // 4)), Image.BILINEAR), 40),
        "brighter_border": jpeg(ImageOps.expand(ImageEnhance.Brightness(image).enhance(1.3), border=w // 20,
                                                fill="white"), 80),
    }


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    from imgsearch import duplicates, local_features
    from imgsearch.config import Settings
    from imgsearch.index import SearchRequest, doc_id
    from imgsearch.pipeline import ImageSearch
    from imgsearch.storage import FolderStorage

    work = Path(tempfile.mkdtemp(prefix="dup-bench-"))
    try:
        refs, copied, photos = work / "refs", work / "copies", work / "photos"
        shutil.copytree(DATA / "Reference", refs)
        shutil.copytree(DATA / "E63", photos)
        for path in sorted(refs.glob("*.jpg")):
            for kind, data in copies(path.read_bytes()).items():
                (copied / kind).mkdir(parents=True, exist_ok=True)
                (copied / kind / path.name).write_bytes(data)

        base = Settings.from_env(dict(os.environ), data_dir=work / "flagged")
        flagged = ImageSearch.open(base)
        plain = ImageSearch.open(base.replace(data_dir=work / "plain", flag_duplicates=False),
                                 embedder=flagged.embedder)
        flagged.embedder.describe([__import__("PIL.Image").Image.new("RGB", (224, 224))])  # warm up the model
        cost = {}
        for name, search in (("without", plain), ("with", flagged), ("without_again", plain)):
            search.index.delete_index()
            search.index.ensure_index()
            started, cpu_started = time.perf_counter(), cpu()
            report = search.ingester.index_source(FolderStorage(refs))
            cost[name] = {"images": report.indexed, "s": round(time.perf_counter() - started, 2),
                          "cpu_s": round(cpu() - cpu_started, 2)}
        cost["ratio_with_to_without"] = round(cost["with"]["s"] / min(cost["without"]["s"],
                                                                       cost["without_again"]["s"]), 3)
        cost["load_average"] = os.getloadavg()
        flagged.upkeep.after_ingest()  # as `imgsearch index` does: the whitening is fitted on the references

        rows: dict[str, list] = {"distinct": []}
        index = flagged.index
        ref_bucket = FolderStorage(refs).bucket

        def nearest(doc, features, count=duplicates.SHORTLIST):
            """The rule's numbers for the document's nearest references (itself left out)."""
            hits = index.search(SearchRequest(vector=doc.vector, page_size=count, mode="knn",
                                              exclude_ids=(doc.doc_id,), with_local_features=True)).hits
            hits = [h for h in hits if h.bucket == ref_bucket]
            matches = local_features.verify(features, [local_features.decode(h.document.local_features)
                                                       for h in hits], min_matches=base.rerank_min_inliers)
            found = [{"key": h.key, "cosine": round(h.score, 4), **duplicates.describe(m)}
                     for h, m in zip(hits, matches)]
            return [n for n in found if n["geometric"] > 0]  # those the rule had to weigh

        for entry in index.entries():  # false copies: each reference against all the others
            doc = index.get(entry.doc_id)
            features = local_features.decode(doc.local_features)
            original = duplicates.find_original(index, doc, features, min_inliers=base.rerank_min_inliers)
            rows["distinct"].append({"key": doc.key, "copy_of": original and original.key,
                                     "nearest": nearest(doc, features)})
        for kind in sorted(p.name for p in copied.iterdir()):
            flagged.ingester.index_source(FolderStorage(copied / kind))
        flagged.ingester.index_source(FolderStorage(photos))
        for doc in (index.get(e.doc_id) for e in index.entries()):
            if doc.bucket == ref_bucket:
                continue
            kind = "photo" if doc.bucket == FolderStorage(photos).bucket else Path(doc.bucket).name
            original = doc.duplicate_of
            own = index.get(doc_id(ref_bucket, doc.key))
            match = local_features.verify(local_features.decode(doc.local_features),
                                          [local_features.decode(own.local_features)])[0]
            rows.setdefault(kind, []).append({"key": doc.key, "copy_of": original and original["key"],
                                              "right": bool(original) and original["key"] == doc.key
                                              and original["bucket"] == ref_bucket,
                                              "score": original and original["score"],
                                              "own": {"cosine": round(float(doc.vector @ own.vector), 4),
                                                      **duplicates.describe(match)}})
        summary = {kind: {"images": len(found), "flagged": sum(1 for r in found if r["copy_of"]),
                          "flagged_right": sum(1 for r in found if r.get("right"))} for kind, found in rows.items()}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({"rule": {"min_spread": duplicates.MIN_SPREAD,
                                            "max_anisotropy": duplicates.MAX_ANISOTROPY,
                                            "max_perspective": duplicates.MAX_PERSPECTIVE,
                                            "min_inliers": base.rerank_min_inliers, "shortlist": duplicates.SHORTLIST},
                                   "ingest_cost": cost, "summary": summary, "rows": rows}))
        print(f"{'images':<18}{'n':>5}{'flagged':>9}{'of its own':>12}")
        for kind, counts in summary.items():
            print(f"{kind:<18}{counts['images']:>5}{counts['flagged']:>9}{counts['flagged_right']:>12}")
        print("ingest of the 100 references:", json.dumps(cost))
        flagged.close()
        plain.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
