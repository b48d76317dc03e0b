"""Where images live: one interface, a local-folder backend and an S3 backend (AWS, MinIO, LocalStack, moto).

"The bucket is the truth": head() tells whether an object exists now, whatever an event said.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mimetypes
import os
import re
import stat as stat_mode
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from .errors import BackendUnavailableError, ImageTooLargeError, InvalidRequestError, NotFoundError, PermanentError

log = logging.getLogger(__name__)
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")  # S3's rules, loosely (old buckets allow more)
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP)  # no such regular file can be there


def canonical_bucket(name: str) -> str:
    """A bucket or folder as documents and the allowlist name it: 's3://' dropped, a folder as its resolved
    absolute path. InvalidRequestError for what no bucket or folder can be called."""
    if "\x00" in name:
        raise InvalidRequestError("a bucket or folder name cannot contain a NUL character")
    name = name.strip()
    if name.startswith("/"):
        return os.path.realpath(name)
    bucket = name.removeprefix("s3://").rstrip("/")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise InvalidRequestError(f"{name[:100]!r} is neither a bucket name nor an absolute folder path")
    return bucket


def check_key(key: str) -> str:
    """A key S3 could store: 1 to 1024 bytes of UTF-8, no NUL (nor can a file name hold one)."""
    if not key or "\x00" in key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidRequestError(f"a key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8 without NUL characters")
    return key


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    etag: str | None
    last_modified: str | None = None
    content_type: str | None = None
    user_metadata: dict[str, str] | None = None  # x-amz-meta-*: from head(); None where unknown (listings)


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

    def tags(self, key: str) -> dict[str, str] | None:
        """The object's tags ({} for none); None when the store will not say (no permission to read them)."""
        return {}

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
        path = Path(os.path.realpath(self.root / check_key(key)))  # symlinks followed: they must stay inside
        if self.root not in path.parents:
            raise NotFoundError(f"key {key!r} is outside the folder")
        return path

    def head(self, key: str) -> StoredObject | None:
        try:
            path = self._path(key)
            stat = path.stat()
        except NotFoundError:  # outside the folder: no such object in it
            return None
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None
            raise
        if not stat_mode.S_ISREG(stat.st_mode):  # devices, FIFOs, folders are no images
            return None
        return self._object(key, path, stat)

    def _object(self, key: str, path: Path, stat: os.stat_result) -> StoredObject:
        # A cheap change marker (size + mtime), so unchanged files are skipped without reading them.
        marker = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()
        return StoredObject(self.bucket, key, stat.st_size, marker, modified, mimetypes.guess_type(path.name)[0],
                            user_metadata={})

    def read(self, key: str, *, max_bytes: int) -> bytes:
        """Only a regular file, and at most max_bytes + 1 bytes of it, whatever size it reports."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a FIFO must not hang us
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise NotFoundError(f"no file {key!r} in the folder") from None
            raise
        with os.fdopen(fd, "rb") as file:
            stat = os.fstat(file.fileno())
            if not stat_mode.S_ISREG(stat.st_mode):
                raise NotFoundError(f"{key!r} is not a regular file")
            if stat.st_size > max_bytes:
                raise ImageTooLargeError(f"file is {stat.st_size} bytes; the limit is {max_bytes} bytes")
            data = file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"file is over the limit of {max_bytes} bytes")
        if len(data) != stat.st_size:  # e.g. /proc files: "0 bytes", then any amount
            raise NotFoundError(f"{key!r} is not a file of a fixed size")
        return data

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
            response = self._call(self.client.head_object, Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise _translate(exc, self.bucket, key) from exc
        return StoredObject(self.bucket, key, response["ContentLength"], response.get("ETag", "").strip('"') or None,
                            _iso(response.get("LastModified")), response.get("ContentType"),
                            user_metadata=response.get("Metadata") or {})

    def tags(self, key: str) -> dict[str, str] | None:
        from botocore.exceptions import ClientError

        try:
            response = self._call(self.client.get_object_tagging, Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _status(exc) == 403:  # s3:GetObjectTagging not granted: index the image anyway, without tags
                log.warning("cannot read the tags of objects in %s (403): indexed without tags", self.bucket)
                return None
            raise _translate(exc, self.bucket, key) from exc
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    def read(self, key: str, *, max_bytes: int) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._call(self.client.get_object, Bucket=self.bucket, Key=check_key(key))
            if response["ContentLength"] > max_bytes:
                response["Body"].close()
                raise ImageTooLargeError(f"object is {response['ContentLength']} bytes; the limit is {max_bytes} bytes")
            data = response["Body"].read(max_bytes + 1)
            response["Body"].close()
        except ClientError as exc:
            raise _translate(exc, self.bucket, key) from exc
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"object is over the limit of {max_bytes} bytes")
        return data

    def list(self, prefix: str = "", *, start_after: str = "") -> Iterator[StoredObject]:
        """In S3's order (UTF-8 bytes); start_after: only keys after this one (a resumed listing)."""
        from botocore.exceptions import ClientError

        try:
            extra = {"StartAfter": start_after} if start_after else {}
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, **extra)
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
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=self.url_expires)

    def presigned_post(self, key: str, *, content_type: str, max_bytes: int, expires_in: int) -> tuple[str, dict]:
        """(url, form fields) of an HTML form POST that may put exactly one object: this key, this Content-Type,
        1 to max_bytes bytes, for expires_in seconds. S3 checks the signed policy, so a browser can upload
        without the bytes passing through us. boto3 adds the bucket and key conditions itself."""
        post = self._call(self.client.generate_presigned_post, Bucket=self.bucket, Key=check_key(key),
                          Fields={"Content-Type": content_type},
                          Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
                          ExpiresIn=expires_in)
        return post["url"], post["fields"]

    def put(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject:
        extra = {"ContentType": content_type} if content_type else {}
        self._call(self.client.put_object, Bucket=self.bucket, Key=check_key(key), Body=data, **extra)
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
