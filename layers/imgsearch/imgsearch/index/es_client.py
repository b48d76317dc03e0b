"""The Elasticsearch client, its errors translated into ours, and the document's _source in both directions.

The client's major version must match the server's (8): pinned in pyproject.toml and checked at ensure_index.
"""

from __future__ import annotations

import base64

import numpy as np
from elasticsearch import ApiError, Elasticsearch, TransportError

from ..config import Settings
from ..errors import BackendUnavailableError, ConfigError
from .document import BLOB_FIELDS, META_FIELDS, VECTOR_FIELD, ImageDocument


def make_client(settings: Settings) -> Elasticsearch:
    options = {"request_timeout": settings.es_timeout, "max_retries": settings.es_retries, "retry_on_timeout": True,
               "retry_on_status": (502, 503, 504), "verify_certs": settings.es_verify_certs}
    if settings.es_api_key_secret:
        options["api_key"] = api_key_from_secret(settings.es_api_key_secret)
    elif settings.es_api_key:
        options["api_key"] = settings.es_api_key
    elif settings.es_username:
        options["basic_auth"] = (settings.es_username, settings.es_password or "")
    if settings.es_ca_file:
        options["ca_certs"] = settings.es_ca_file
    return Elasticsearch(list(settings.es_urls), **options)


def api_key_from_secret(secret_id: str) -> str:
    """The API key held by a Secrets Manager secret, read once when the client is made (a cold start), so the
    key is in no environment variable, template or function configuration. A secret that cannot be read is the
    operator's to fix (ConfigError: retried and alarmed, never a dead letter)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        key = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id).get("SecretString")
    except ClientError as exc:
        raise ConfigError(f"IMGSEARCH_ES_API_KEY_SECRET: cannot read the secret "
                          f"({exc.response['Error'].get('Code', 'error')})") from None
    except BotoCoreError as exc:
        raise ConfigError(f"IMGSEARCH_ES_API_KEY_SECRET: cannot reach Secrets Manager ({type(exc).__name__})") \
            from None
    if not key or not key.strip():
        raise ConfigError("IMGSEARCH_ES_API_KEY_SECRET: the secret has no SecretString (the base64 id:key)")
    return key.strip()


def call(method, *args, **kwargs):
    """Run a client call; connection problems and 429/5xx become BackendUnavailableError."""
    try:
        return method(*args, **kwargs)
    except TransportError as exc:  # connection refused, timeout, TLS: nothing answered
        raise BackendUnavailableError(f"Elasticsearch unreachable: {exc}") from exc
    except ApiError as exc:
        if exc.meta.status in (429, 500, 502, 503, 504):
            raise BackendUnavailableError(f"Elasticsearch error {exc.meta.status}: {exc.message}") from exc
        raise


def floats(vector) -> list[float]:
    return np.asarray(vector, dtype=np.float32).astype(float).tolist()


def to_source(doc: ImageDocument) -> dict:
    source = {"file_name": doc.key, VECTOR_FIELD: floats(doc.vector),
              **{name: getattr(doc, name) for name in META_FIELDS}}
    for name in BLOB_FIELDS:
        if getattr(doc, name) is not None:
            source[name] = base64.b64encode(getattr(doc, name)).decode("ascii")
    return source


def from_source(source: dict) -> ImageDocument:
    vector = source.get(VECTOR_FIELD)
    return ImageDocument(
        vector=np.asarray(vector, dtype=np.float32) if vector is not None else np.zeros(0, dtype=np.float32),
        **{name: base64.b64decode(source[name]) if source.get(name) else None for name in BLOB_FIELDS},
        **{name: source.get(name) for name in META_FIELDS})
