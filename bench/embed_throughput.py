"""Embedding throughput: the original demo's one-image-per-model.predict path vs our batched Embedder.

Each path runs in its own subprocess (same images, same weights), so peak resident memory is per path.
Also times JPEG decoding of 1600x1200 phone photos with and without draft_size=224.

    .venv/bin/python bench/embed_throughput.py [--images 64] [--batches 1,8,16,32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from common import COVERS, WEIGHTS, load, machine, table, write_json


def read_covers(n: int):
    from PIL import Image

    paths = sorted((COVERS / "Reference").glob("*.jpg"))[:n]
    return [Image.open(p).convert("RGB") for p in paths]  # decoded once, before any timing


def rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime  # all threads of this process


def worker(path: str, batch: int, n: int, repeats: int) -> dict:
    """Runs in a subprocess: time one path over n images, `repeats` times after one warm-up."""
    import numpy as np

    images = read_covers(n)
    before_model = rss_mib()
    if path == "demo":
        import keras
        from keras.applications.vgg19 import preprocess_input

        model = keras.applications.VGG19(include_top=False, weights=str(WEIGHTS), pooling="max")

        def run(imgs):
            out = []
            for img in imgs:  # the demo: resize, preprocess, one model.predict per image
                x = np.asarray(img.resize((224, 224)), dtype=np.float32)[None]  # (1, 224, 224, 3)
                v = model.predict(preprocess_input(x), verbose=0)[0]  # (512,)
                out.append(v / np.linalg.norm(v))
            return np.stack(out)
        run(images[:1])  # warm-up
    else:
        from imgsearch.embedder import Embedder

        embedder = Embedder(str(WEIGHTS), batch_size=batch)
        run = embedder.embed
        run(images[:batch])  # warm-up: loads the model and traces the graph once
    seconds, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), cpu_seconds()
        vectors = run(images)
        seconds.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - cpu_start)
    assert vectors.shape == (n, 512)
    return {"path": path, "batch": batch, "images": n, "seconds": seconds,
            "img_per_s": round(n / statistics.median(seconds), 2), "img_per_s_best": round(n / min(seconds), 2),
            "cpu_s_per_image": round(statistics.median(cpu) / n, 3),
            "rss_before_model_mib": before_model, "peak_rss_mib": rss_mib()}


def decode_times(n: int) -> dict:
    """ms per image for decode_image on the E63 phone photos, with and without draft_size=224."""
    from imgsearch.config import Settings
    from imgsearch.images import decode_image

    s = Settings()
    blobs = [p.read_bytes() for p in sorted((COVERS / "E63").glob("*.jpg"))[:n]]
    out = {"images": len(blobs)}
    for label, draft in (("full", None), ("draft_224", 224)):
        decode_image(blobs[0], max_bytes=s.max_image_bytes, max_pixels=s.max_pixels, draft_size=draft)  # warm-up
        start = time.perf_counter()
        sizes = {decode_image(b, max_bytes=s.max_image_bytes, max_pixels=s.max_pixels, draft_size=draft).image.size
                 for b in blobs}
        out[label] = {"ms_per_image": round(1000 * (time.perf_counter() - start) / len(blobs), 2),
                      "decoded_sizes": sorted(f"{w}x{h}" for w, h in sizes)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="Reference covers to embed (500x500 JPEGs)")
    ap.add_argument("--batches", default="1,8,16,32", help="batch sizes for the Embedder path")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per path (median reported)")
    ap.add_argument("--decode-images", type=int, default=100, help="E63 photos (1600x1200) to decode")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.images, args.repeats)))
        return

    info = machine()
    runs = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for path, batch in [("demo", 1)] + [("batched", int(b)) for b in args.batches.split(",")]:
        load_before = load()
        cmd = [sys.executable, __file__, "--worker", path, "--batch", str(batch),
               "--images", str(args.images), "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{path} batch {batch} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            runs.append({"path": path, "batch": batch, "error": done.stderr[-500:]})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(load_before=load_before, load_after=load())
        runs.append(result)
        print(f"{path} b={batch}: {result['img_per_s']} img/s, peak RSS {result['peak_rss_mib']} MiB", file=sys.stderr)
    demo = next((r["img_per_s"] for r in runs if r["path"] == "demo" and "error" not in r), None)
    for r in runs:
        if demo and "error" not in r:
            r["ratio_vs_demo"] = round(r["img_per_s"] / demo, 2)
    decode_load = load()
    decode = decode_times(args.decode_images)
    decode.update(load_before=decode_load, load_after=load())
    info["loadavg_after"] = load()
    path = write_json("embed.json", {"machine": info, "weights": WEIGHTS.name, "runs": runs, "decode": decode})

    print(f"\nMachine: {info['cpu']}, {info['nproc']} cores, {info['mem_gib']} GiB; "
          f"load {info['loadavg']} before, {info['loadavg_after']} after (shared machine)\n")
    print(table(["path", "batch", "img/s median (best)", "x demo", "CPU s/image", "peak RSS MiB", "load before -> after"],
                [[("demo: model.predict per image" if r["path"] == "demo" else "Embedder.embed"), r["batch"],
                  f"{r.get('img_per_s', 'failed')} ({r.get('img_per_s_best', '')})", r.get("ratio_vs_demo", ""),
                  r.get("cpu_s_per_image", ""), r.get("peak_rss_mib", ""),
                  f"{r.get('load_before', '')} -> {r.get('load_after', '')}"] for r in runs]))
    print(f"\nRSS before building the model: {runs[0].get('rss_before_model_mib')} MiB (Python + {args.images} decoded images)")
    print()
    print(table(["decode (E63, 1600x1200 JPEG)", "ms/image", "decoded size"],
                [[label, decode[label]["ms_per_image"], ", ".join(decode[label]["decoded_sizes"])]
                 for label in ("full", "draft_224")]))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
