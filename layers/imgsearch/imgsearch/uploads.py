"""Uploads from the page: a presigned POST that lets a browser put one image straight into the bucket.

The image never passes through the API (API Gateway takes 10 MB a request, Lambda 6 MB): the page asks for a
ticket, POSTs the file to S3 with it, and the bucket's notification indexes it like any other upload. S3
enforces the ticket's signed policy: the configured bucket (data never chooses where we write), a key chosen
here (a prefix, a random id, the type's extension; never the user's file name), the exact Content-Type,
1 to IMGSEARCH_MAX_IMAGE_BYTES bytes, for IMGSEARCH_UPLOAD_EXPIRES seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass

from .config import Settings
from .errors import InvalidRequestError, UploadsUnavailableError
from .storage import S3Storage
from .storages import Storages

# The types the decoder reads (images.CONTENT_TYPES; a unit test keeps the two in step), with the extension
# the key gets. The decoder goes by the bytes: the type only names the object for browsers that open it.
UPLOAD_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
                "image/bmp": ".bmp", "image/tiff": ".tiff"}
ALIASES = {"image/jpg": "image/jpeg"}  # a common misspelling; S3 gets the right name
ACCEPTED_TYPES = (*UPLOAD_TYPES, *ALIASES)
MAX_FILENAME = 255


@dataclass(frozen=True)
class UploadTicket:
    url: str  # where the form goes (S3)
    fields: dict[str, str]  # the form's fields, sent before the file (policy, signature, key, Content-Type)
    bucket: str
    key: str
    max_bytes: int
    expires_in: int
    filename: str | None = None  # the client's own name for the file, handed back for display only

    def to_dict(self) -> dict:
        return asdict(self)


def new_upload(settings: Settings, storages: Storages, content_type: str, *,
               filename: str | None = None) -> UploadTicket:
    """A ticket to put one image of content_type into the configured bucket. InvalidRequestError for a type
    the decoder does not read or a file name that is too long; UploadsUnavailableError where there is no S3
    bucket to put it in."""
    content_type = ALIASES.get(content_type, content_type)
    if content_type not in UPLOAD_TYPES:
        raise InvalidRequestError(f"content_type must be one of {', '.join(ACCEPTED_TYPES)}, got {content_type!r}")
    if filename is not None and len(filename) > MAX_FILENAME:
        raise InvalidRequestError(f"filename may be at most {MAX_FILENAME} characters")
    if not settings.bucket:
        raise UploadsUnavailableError("uploads need an S3 bucket, and this service has none (IMGSEARCH_BUCKET)")
    storage = storages.get(settings.bucket)
    if not isinstance(storage, S3Storage):  # a folder: the browser cannot POST into it (and no path is named)
        raise UploadsUnavailableError("uploads need an S3 bucket; this service's bucket is a local folder")
    key = f"{settings.upload_prefix}{secrets.token_hex(16)}{UPLOAD_TYPES[content_type]}"
    url, fields = storage.presigned_post(key, content_type=content_type, max_bytes=settings.max_image_bytes,
                                         expires_in=settings.upload_expires)
    return UploadTicket(url=url, fields=fields, bucket=storage.bucket, key=key, max_bytes=settings.max_image_bytes,
                        expires_in=settings.upload_expires, filename=filename)
