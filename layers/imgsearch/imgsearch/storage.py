"""Where images live: one interface, a local-folder backend and an S3 backend (AWS, MinIO, LocalStack, moto).

"The bucket is the truth": head() tells whether an object exists now, whatever an event said.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from .errors import BackendUnavailableError, ImageTooLargeError, NotFoundError, PermanentError

@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    etag: str | None
    last_modified: str | None = None
    content_type: str | None = None


class Storage(ABC):
    """One bucket (or folder) of images."""

    bucket: str

    @abstractmethod
    def head(self, key: str) -> StoredObject | None:
        """The object's current state, or None if it does not exist."""

    @abstractmethod
    def read(self, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; NotFoundError if absent, ImageTooLargeError past max_bytes."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[StoredObject]: ...

    @abstractmethod
    def url(self, key: str) -> str:
        """A URL a user can open: presigned for S3, file:// for a folder."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject: ...

    @abstractmethod
    def check(self) -> None:
        """Raise NotFoundError / BackendUnavailableError unless the bucket or folder is reachable."""


class FolderStorage(Storage):
    """A local folder; the bucket name is the folder's absolute path, keys are '/'-separated relative paths."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.bucket = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise NotFoundError(f"key {key!r} is outside {self.root}")
        return path

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return self._object(key, path, stat)

    def _object(self, key: str, path: Path, stat: os.stat_result) -> StoredObject:
        # A cheap change marker (size + mtime), so unchanged files are skipped without reading them.
        marker = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()
        return StoredObject(self.bucket, key, stat.st_size, marker, modified, mimetypes.guess_type(path.name)[0])

    def read(self, key: str, *, max_bytes: int) -> bytes:
        path = self._path(key)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageTooLargeError(f"file is {size} bytes; the limit is {max_bytes} bytes")
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"no file {key!r} in {self.root}") from None

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not any(p.startswith(".") for p in key.split("/")):
                yield self._object(key, path, path.stat())

    def url(self, key: str) -> str:
        return "file://" + quote(str(self._path(key)))

    def check(self) -> None:
        if not self.root.is_dir():
            raise NotFoundError(f"folder {self.root} does not exist")

    def put(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self._object(key, path, path.stat())


class S3Storage(Storage):
    """An S3 bucket through boto3; the client comes from s3_client (one per process: storages.Storages)."""

    def __init__(self, bucket: str, *, client=None, url_expires: int = 3600):
        self.bucket = bucket
        self.client = client or s3_client()
        self.url_expires = url_expires

    def head(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        try:
            response = self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise _translate(exc, self.bucket, key) from exc
        return StoredObject(self.bucket, key, response["ContentLength"], response.get("ETag", "").strip('"') or None,
                            _iso(response.get("LastModified")), response.get("ContentType"))

    def read(self, key: str, *, max_bytes: int) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
            if response["ContentLength"] > max_bytes:
                response["Body"].close()
                raise ImageTooLargeError(f"object is {response['ContentLength']} bytes; the limit is {max_bytes} bytes")
            return response["Body"].read()
        except ClientError as exc:
            raise _translate(exc, self.bucket, key) from exc

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        from botocore.exceptions import ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in _translated(pages):  # pages are fetched lazily, so errors come while iterating
                for item in page.get("Contents", []):
                    yield StoredObject(self.bucket, item["Key"], item["Size"], item.get("ETag", "").strip('"') or None,
                                       _iso(item.get("LastModified")))
        except ClientError as exc:
            raise _translate(exc, self.bucket, prefix) from exc

    def check(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            raise _translate(exc, self.bucket, "") from exc

    def url(self, key: str) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_expires)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject:
        extra = {"ContentType": content_type} if content_type else {}
        self._call(self.client.put_object, Bucket=self.bucket, Key=key, Body=data, **extra)
        return self.head(key)

    def _call(self, method, **kwargs):
        from botocore.exceptions import BotoCoreError

        try:
            return method(**kwargs)
        except BotoCoreError as exc:  # connection refused, timeouts, DNS: the store is down, not the object
            raise BackendUnavailableError(f"object store unreachable: {exc}") from exc


def _translated(pages):
    """Iterate pages, turning a connection failure midway into BackendUnavailableError."""
    from botocore.exceptions import BotoCoreError

    try:
        yield from pages
    except BotoCoreError as exc:
        raise BackendUnavailableError(f"object store unreachable: {exc}") from exc


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; path-style addressing whenever a custom endpoint is used (MinIO needs it)."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path"} if endpoint_url else {})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _status(exc) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _translate(exc, bucket: str, key: str) -> Exception:
    status = _status(exc)
    code = exc.response.get("Error", {}).get("Code", "")
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NotFound"):
        return NotFoundError(f"s3://{bucket}/{key} does not exist")
    if status is not None and (status >= 500 or status in (408, 429)):
        return BackendUnavailableError(f"object store error {status} {code} for s3://{bucket}/{key}")
    return PermanentError(f"object store refused s3://{bucket}/{key}: {status} {code}")


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value
