"""Helpers for test modules (conftest.py files are for fixtures: their names collide across folders)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import boto3
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGSEARCH_SHARED_DIR", REPO.parent / "shared"))
WEIGHTS = Path(os.environ.get("IMGSEARCH_VGG19_WEIGHTS")
               or SHARED / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
INT8_MODEL = Path(os.environ["IMGSEARCH_INT8_MODEL"]) if os.environ.get("IMGSEARCH_INT8_MODEL") else None
SEED_DIR = SHARED / "fixtures" / "seed-images"
DVD_DIR = SHARED / "datasets" / "smvs_dvd_covers"


# What tests need from ../shared: each skips the test without it, or fails it in CI (servers.unavailable).
def weights_file() -> Path:
    from servers import unavailable

    if not WEIGHTS.is_file():
        unavailable(f"VGG19 ImageNet weights not found at {WEIGHTS}")
    return WEIGHTS


def seed_images() -> list[Path]:
    from servers import unavailable

    paths = sorted(SEED_DIR.glob("*.jpg"))
    if not paths:
        unavailable(f"no seed images in {SEED_DIR}")
    return paths


def dvd_dir() -> Path:
    from servers import unavailable

    if not DVD_DIR.is_dir():
        unavailable(f"dataset not found at {DVD_DIR}")
    return DVD_DIR


def reencoded_copy(path: Path, *, quality: int = 70, scale: float = 0.5, crop: float = 0.05) -> bytes:
    """A re-encoded, resized and mildly cropped JPEG copy of an image: what "finds its original" is about."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        dx, dy = int(w * crop), int(h * crop)
        image = image.crop((dx, dy, w - dx, h - dy))
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.BILINEAR)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        return out.getvalue()


def make_bucket_with_queue(endpoint: str, bucket: str, *, tag_changes: bool = True) -> dict:
    """Bucket -> queue notifications with a dead-letter queue, made through the S3 and SQS APIs by the same
    code users run (localstack/setup_resources.py). tag_changes=False: creations and removals only, for tests
    that count messages (moto's put_object also sends an ObjectTagging:Put, which S3 does not)."""
    import sys

    sys.path.insert(0, str(REPO / "localstack"))
    from setup_resources import create_resources

    s3 = boto3.client("s3", endpoint_url=endpoint)
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    made = create_resources(s3, sqs, bucket, queue=f"{bucket}-events", dead_letter_queue=f"{bucket}-dlq")
    if not tag_changes:
        without_tag_changes(s3, sqs, bucket, made["IMGSEARCH_QUEUE_URL"])
    return {"s3": s3, "sqs": sqs, "queue": made["IMGSEARCH_QUEUE_URL"], "dlq": made["IMGSEARCH_DEAD_LETTER_QUEUE_URL"]}


def without_tag_changes(s3, sqs, bucket: str, queue_url: str) -> None:
    """The bucket notifies the queue of creations and removals only (setup_resources.EVENTS)."""
    from setup_resources import EVENTS, ensure_notification, queue_arn

    ensure_notification(s3, bucket, queue_arn(sqs, queue_url), EVENTS)


class ColourEmbedder:
    """Mean colour -> a 512-d unit vector; counts its calls so skipping work is observable."""

    model_id = "fake-colour"
    dim = 512
    whitened = False

    def __init__(self):
        self.embedded = 0

    def embed(self, images):
        self.embedded += len(images)
        rows = np.zeros((len(images), 512), np.float32)
        for i, image in enumerate(images):
            rows[i, :3] = np.asarray(image, np.float32).reshape(-1, 3).mean(axis=0) + 1
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def describe(self, images):
        from imgsearch.whitening import DescriptorSet

        return [DescriptorSet(raw=row, regions=row[None]) for row in self.embed(images)]

    def embed_query(self, image):
        return self.embed([image])  # (1, 512): one query vector


class WhitenedColourEmbedder(ColourEmbedder):
    """The colour embedder, but its vectors go through the index's whitening like the real recipe's."""

    whitened = True


def distinct_colours(n: int) -> list[tuple[int, int, int]]:
    return [((37 * i) % 256, (91 * i) % 256, (173 * i) % 256) for i in range(n)]


def png(colour) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="PNG")
    return out.getvalue()


def error_of(response, status: int, code: str) -> str:
    """An API error answer: this status, JSON {"message", "code"} with this code; returns the message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"message", "code"} and body["code"] == code, body
    assert body["message"]
    return body["message"]


def emf_metrics(output: str) -> dict[str, list[float]]:
    """Every metric value in the CloudWatch embedded-metric-format lines of output (what powertools Metrics
    prints and Lambda's log stream turns into metrics), by metric name."""
    values: dict[str, list[float]] = {}
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "_aws" not in record:
            continue
        for directive in record["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "ImgSearch"
            for metric in directive["Metrics"]:
                value = record[metric["Name"]]
                values.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return values
