"""Which Storage serves a bucket, and whether it may: the one place a bucket name becomes a Storage.

Configuration chooses where we read; data never does. A bucket or folder is opened only if the settings allow
it (IMGSEARCH_ALLOWED_BUCKETS, and IMGSEARCH_BUCKET) or the operator named it for this run (a command-line
argument: `allow`, `open_source`, `add`); an event, a document or a request naming another is refused with
StorageNotAllowedError. Folder "buckets" are absolute paths and are never opened in Lambda. All S3 buckets share
one client (built on first use, with the endpoint from the settings); a bucket is opened once per process.
"""

from __future__ import annotations

from pathlib import Path

from .config import Settings
from .errors import NotFoundError, PermanentError, StorageNotAllowedError
from .storage import FolderStorage, S3Storage, Storage, canonical_bucket, s3_client


class Storages:
    """bucket -> Storage, for the allowed buckets only; built on first use and kept."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._by_bucket: dict[str, Storage] = {}
        self._allowed: set[str] = set()  # named by the operator for this run
        self._s3 = None

    def get(self, bucket: str) -> Storage:
        """The storage of an allowed bucket or folder; StorageNotAllowedError for any other."""
        if bucket in self._by_bucket:
            return self._by_bucket[bucket]
        bucket = canonical_bucket(bucket)  # InvalidRequestError for a name nothing can have (a NUL, ...)
        if bucket not in self._by_bucket:
            self._by_bucket[bucket] = self._open(bucket)
        return self._by_bucket[bucket]

    def allows(self, bucket: str) -> bool:
        if bucket in self._by_bucket:
            return True
        if bucket.startswith("/") and self.settings.in_lambda:
            return False
        return bucket in self._allowed or bucket in self.settings.storage_allowlist

    def allow(self, bucket: str) -> str:
        """Serve this bucket or folder too, for this process: the operator named it (a command-line argument)."""
        bucket = canonical_bucket(bucket)
        self._allowed.add(bucket)
        return bucket

    def add(self, storage: Storage) -> Storage:
        """Serve this storage object (a folder named on the command line, a test's fake) for its bucket."""
        self._by_bucket[storage.bucket] = storage
        return storage

    def open_source(self, source: str) -> tuple[Storage, str]:
        """'s3://bucket/prefix' or a folder path, named by the operator -> (storage, prefix), allowed and kept."""
        if source.startswith("s3://"):
            bucket, _, prefix = source[len("s3://"):].partition("/")
            if not bucket:
                raise PermanentError(f"no bucket in {source!r}; use s3://BUCKET[/PREFIX]")
            return self.get(self.allow(bucket)), prefix
        path = Path(source).expanduser()
        if not path.is_dir():
            raise NotFoundError(f"{source} is not a folder (or use s3://BUCKET/PREFIX)")
        return self.add(FolderStorage(path)), ""

    def url(self, bucket: str, key: str) -> str:
        return self.get(bucket).url(key)

    def _open(self, bucket: str) -> Storage:
        if not self.allows(bucket):
            if bucket.startswith("/") and self.settings.in_lambda:
                raise StorageNotAllowedError(f"folder {bucket!r}: folders are never read in Lambda")
            raise StorageNotAllowedError(f"bucket {bucket!r} is not in IMGSEARCH_ALLOWED_BUCKETS")
        if bucket.startswith("/"):  # folder "buckets" are absolute paths; S3 bucket names never start with "/"
            return FolderStorage(bucket)
        if self._s3 is None:
            self._s3 = s3_client(self.settings.s3_endpoint_url)
        return S3Storage(bucket, client=self._s3, url_expires=self.settings.url_expires)
