"""Which Storage serves a bucket: folders are absolute paths, anything else is an S3 bucket, all S3 buckets share
one client (built on first use, with the endpoint from the settings). Ingest, search and the API's content route
ask here, so a bucket is opened once per process."""

from __future__ import annotations

from pathlib import Path

from .config import Settings
from .errors import NotFoundError, PermanentError
from .storage import FolderStorage, S3Storage, Storage, s3_client


class Storages:
    """bucket -> Storage, built on first use and kept."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._by_bucket: dict[str, Storage] = {}
        self._s3 = None

    def get(self, bucket: str) -> Storage:
        if bucket not in self._by_bucket:
            self._by_bucket[bucket] = self._open(bucket)
        return self._by_bucket[bucket]

    def add(self, storage: Storage) -> Storage:
        """Serve this storage object (e.g. a folder named on the command line, a test's fake) for its bucket."""
        self._by_bucket[storage.bucket] = storage
        return storage

    def open_source(self, source: str) -> tuple[Storage, str]:
        """'s3://bucket/prefix' or a folder path -> (storage, prefix), registered for its bucket."""
        if source.startswith("s3://"):
            bucket, _, prefix = source[len("s3://"):].partition("/")
            if not bucket:
                raise PermanentError(f"no bucket in {source!r}; use s3://BUCKET[/PREFIX]")
            return self.get(bucket), prefix
        path = Path(source).expanduser()
        if not path.is_dir():
            raise NotFoundError(f"{source} is not a folder (or use s3://BUCKET/PREFIX)")
        return self.add(FolderStorage(path)), ""

    def url(self, bucket: str, key: str) -> str:
        return self.get(bucket).url(key)

    def _open(self, bucket: str) -> Storage:
        if bucket.startswith("/"):  # folder "buckets" are absolute paths; S3 bucket names never start with "/"
            return FolderStorage(bucket)
        if self._s3 is None:
            self._s3 = s3_client(self.settings.s3_endpoint_url)
        return S3Storage(bucket, client=self._s3, url_expires=self.settings.url_expires)
