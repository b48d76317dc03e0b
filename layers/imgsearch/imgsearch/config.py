"""All settings, read in one place: explicit argument > environment variable > default.

Every variable is documented in the README ("Configuration"). Adapters call `Settings.from_env()` once and
pass the object down; nothing else in the library reads the environment.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import ConfigError, InvalidRequestError
from .storage import canonical_bucket

BACKENDS = ("embedded", "elasticsearch")
SEARCH_MODES = ("exact", "knn")
PRECISIONS = ("int8", "fp32")
VECTOR_INDEX_TYPES = ("hnsw", "int8_hnsw", "flat", "int8_flat")
DEFAULT_INDEX = "search_by_image_index"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "imgsearch"


@dataclass(frozen=True)
class Settings:
    weights: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    backend: str = "embedded"
    es_urls: tuple[str, ...] = ("http://127.0.0.1:9200",)
    es_index: str = DEFAULT_INDEX
    es_api_key: str | None = field(default=None, repr=False)
    es_api_key_secret: str | None = None  # a Secrets Manager secret (ARN or name) holding the API key instead
    es_username: str | None = None
    es_password: str | None = field(default=None, repr=False)
    es_ca_file: str | None = None
    es_verify_certs: bool = True
    es_timeout: float = 30.0
    es_retries: int = 3
    es_vector_index: str = "hnsw"
    search_mode: str = "knn"
    knn_candidates: int = 100
    max_image_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    batch_size: int = 8
    url_expires: int = 3600
    bucket: str | None = None
    allowed_buckets: tuple[str, ...] = ()  # buckets and absolute folder paths we may read, besides `bucket`
    in_lambda: bool = False  # AWS_LAMBDA_FUNCTION_NAME is set: folders are never storages there
    api_key: str | None = field(default=None, repr=False)
    webhook_token: str | None = field(default=None, repr=False)  # `imgsearch webhook`: MinIO's bearer token
    max_page_size: int = 100
    rerank: bool = True
    rerank_depth: int = 40
    rerank_min_inliers: int = 15
    flag_duplicates: bool = True  # ingest records a copy's original (duplicates.py); needs rerank's local features
    s3_endpoint_url: str | None = None  # MinIO, LocalStack, moto; None: AWS
    dead_letter_queue_url: str | None = None  # extract: park permanent failures here at once; stats: count them
    queue_url: str | None = None  # the events queue, for the ingest backlog in stats (backlog.py)
    functions_dir: Path | None = None  # the local runners: functions/ of a checkout (None: this package's)
    precision: str | None = None  # the network's runtime: "int8" (OpenVINO) or "fp32" (TensorFlow); see below
    int8_model: Path | None = None  # the int8 model `imgsearch build-model` wrote (its .xml)
    url_allow_private: bool = False  # search by URL may fetch from loopback and private addresses (tests, local)
    upload_prefix: str = "uploads/"  # where the page's uploads go in the bucket (uploads.py): prefix + random id
    upload_expires: int = 300  # seconds a presigned upload form stays valid: long enough to send one image

    _ENV = {
        "weights": "IMGSEARCH_VGG19_WEIGHTS",
        "data_dir": "IMGSEARCH_DATA_DIR",
        "backend": "IMGSEARCH_BACKEND",
        "es_urls": "IMGSEARCH_ES_URL",
        "es_index": "IMGSEARCH_ES_INDEX",
        "es_api_key": "IMGSEARCH_ES_API_KEY",
        "es_api_key_secret": "IMGSEARCH_ES_API_KEY_SECRET",
        "es_username": "IMGSEARCH_ES_USERNAME",
        "es_password": "IMGSEARCH_ES_PASSWORD",
        "es_ca_file": "IMGSEARCH_ES_CA_FILE",
        "es_verify_certs": "IMGSEARCH_ES_VERIFY_CERTS",
        "es_timeout": "IMGSEARCH_ES_TIMEOUT",
        "es_retries": "IMGSEARCH_ES_RETRIES",
        "es_vector_index": "IMGSEARCH_ES_VECTOR_INDEX",
        "search_mode": "IMGSEARCH_SEARCH_MODE",
        "knn_candidates": "IMGSEARCH_KNN_CANDIDATES",
        "max_image_bytes": "IMGSEARCH_MAX_IMAGE_BYTES",
        "max_pixels": "IMGSEARCH_MAX_PIXELS",
        "batch_size": "IMGSEARCH_BATCH_SIZE",
        "url_expires": "IMGSEARCH_URL_EXPIRES",
        "bucket": "IMGSEARCH_BUCKET",
        "allowed_buckets": "IMGSEARCH_ALLOWED_BUCKETS",
        "in_lambda": "AWS_LAMBDA_FUNCTION_NAME",
        "api_key": "IMGSEARCH_API_KEY",
        "webhook_token": "IMGSEARCH_WEBHOOK_TOKEN",
        "max_page_size": "IMGSEARCH_MAX_PAGE_SIZE",
        "rerank": "IMGSEARCH_RERANK",
        "rerank_depth": "IMGSEARCH_RERANK_DEPTH",
        "rerank_min_inliers": "IMGSEARCH_RERANK_MIN_INLIERS",
        "s3_endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),  # boto3's own names, first one set wins
        "dead_letter_queue_url": "IMGSEARCH_DEAD_LETTER_QUEUE_URL",
        "queue_url": "IMGSEARCH_QUEUE_URL",
        "functions_dir": "IMGSEARCH_FUNCTIONS_DIR",
        "precision": "IMGSEARCH_PRECISION",
        "int8_model": "IMGSEARCH_INT8_MODEL",
        "url_allow_private": "IMGSEARCH_URL_ALLOW_PRIVATE",
        "flag_duplicates": "IMGSEARCH_FLAG_DUPLICATES",
        "upload_prefix": "IMGSEARCH_UPLOAD_PREFIX",
        "upload_expires": "IMGSEARCH_UPLOAD_EXPIRES",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from the environment; keyword arguments that are not None win."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            names = cls._ENV.get(f.name, ())
            for name in (names,) if isinstance(names, str) else names:
                raw = environ.get(name)
                if raw is not None and raw.strip() != "":
                    values[f.name] = _parse(f.name, name, raw.strip())
                    break
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes) -> "Settings":
        settings = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        settings.validate()
        return settings

    @property
    def effective_precision(self) -> str:
        """IMGSEARCH_PRECISION, else int8 wherever the int8 model was built (IMGSEARCH_INT8_MODEL), else fp32."""
        return self.precision or ("int8" if self.int8_model else "fp32")

    @functools.cached_property
    def storage_allowlist(self) -> frozenset[str]:
        """Every bucket and folder this deployment may read: IMGSEARCH_ALLOWED_BUCKETS and IMGSEARCH_BUCKET,
        as storages.Storages compares them (folders resolved). Nothing else, whatever an event or a request
        names; the CLI adds what its operator names on the command line."""
        named = [("IMGSEARCH_ALLOWED_BUCKETS", entry) for entry in self.allowed_buckets]
        named += [("IMGSEARCH_BUCKET", self.bucket)] if self.bucket else []
        allowed = set()
        for env_name, entry in named:
            try:
                allowed.add(canonical_bucket(entry))
            except InvalidRequestError as exc:
                raise ConfigError(f"{env_name}: {exc}") from None
        return frozenset(allowed)

    def validate(self) -> None:
        self.storage_allowlist  # noqa: B018  (checks the names)
        _choice("IMGSEARCH_BACKEND", self.backend, BACKENDS)
        if self.precision is not None:
            _choice("IMGSEARCH_PRECISION", self.precision, PRECISIONS)
        _choice("IMGSEARCH_SEARCH_MODE", self.search_mode, SEARCH_MODES)
        _choice("IMGSEARCH_ES_VECTOR_INDEX", self.es_vector_index, VECTOR_INDEX_TYPES)
        for name in ("max_image_bytes", "max_pixels", "batch_size", "url_expires", "max_page_size",
                     "knn_candidates", "rerank_depth", "rerank_min_inliers", "upload_expires"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{self._ENV[name]} must be a positive number, got {getattr(self, name)}")
        # An upload's key is the prefix, 32 hex digits and an extension: it must stay a key S3 can store.
        if "\x00" in self.upload_prefix or len(self.upload_prefix.encode("utf-8", "surrogatepass")) > 900:
            raise ConfigError("IMGSEARCH_UPLOAD_PREFIX must be at most 900 bytes of UTF-8 without NUL characters")


_INTS = {"es_retries", "knn_candidates", "max_image_bytes", "max_pixels", "batch_size", "url_expires",
         "max_page_size", "rerank_depth", "rerank_min_inliers", "upload_expires"}
_BOOLS = {"es_verify_certs", "rerank", "url_allow_private", "flag_duplicates"}


def _parse(field_name: str, env_name: str, raw: str):
    try:
        if field_name in _INTS:
            return int(raw)
        if field_name == "es_timeout":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{env_name} must be a number, got {raw!r}") from None
    if field_name in _BOOLS:
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{env_name} must be true or false, got {raw!r}")
        return raw.lower() in ("1", "true", "yes")
    if field_name == "in_lambda":
        return True
    if field_name == "allowed_buckets":
        return tuple(os.path.expanduser(entry.strip()) for entry in raw.split(",") if entry.strip())
    if field_name == "es_urls":
        return tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    if field_name in ("data_dir", "functions_dir", "int8_model"):
        return Path(raw).expanduser()
    return raw


def _choice(env_name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{env_name} must be one of {', '.join(allowed)}; got {value!r}")
