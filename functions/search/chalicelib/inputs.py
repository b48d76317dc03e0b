"""Reading requests: the query image (multipart, raw body, base64 JSON or a JSON URL), search parameters, image
references.

Everything here only translates HTTP into plain values for the core and raises chalicelib.errors classes (or the
core's ImageTooLargeError) for what is wrong with the request; nothing here decodes an image or fetches a URL (the
core's imgsearch.fetch does, with its own checks).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any, Mapping
from urllib.parse import unquote

from imgsearch.config import SEARCH_MODES, Settings
from imgsearch.errors import ImageTooLargeError
from imgsearch.labels import Filter, parse_filters
from imgsearch.options import DEFAULT_PAGE_SIZE, SearchOptions, max_page
from imgsearch.storage import canonical_bucket

from .errors import BadRequest, UnsupportedMediaType

MULTIPART = "multipart/form-data"
JSON = "application/json"
# What the core decodes (imgsearch.images.SUPPORTED_FORMATS); image/jpg is a common misspelling of image/jpeg.
IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
RAW_TYPES = (*IMAGE_TYPES, "application/octet-stream")  # the decoder sniffs the format from the bytes
UPLOAD_CONTENT_TYPES = [MULTIPART, JSON, *RAW_TYPES]
BINARY_TYPES = [*RAW_TYPES, MULTIPART]  # bodies API Gateway must hand over base64-encoded, untouched

FILE_FIELD = "file"
_ENVELOPE = 64 * 1024  # room for multipart headers and form fields around the image
_NO_IMAGE = ("no image: send multipart/form-data with a 'file' field, a raw image body with Content-Type "
             "image/jpeg (png, webp, gif, bmp, tiff), or JSON {\"image\": \"<base64>\"}")
_NO_IMAGE_OR_URL = _NO_IMAGE + ", or JSON {\"url\": \"https://...\"}"


@dataclass(frozen=True)
class Upload:
    image: bytes | None  # None: the query image is at `url`
    fields: dict[str, Any] = field(default_factory=dict)  # query string, overridden by form fields / JSON keys
    url: str | None = None  # JSON {"url": ...} where the route accepts it: exactly one of image and url


def read_upload(request, *, max_bytes: int, accept_url: bool = False) -> Upload:
    """The query image (or, with accept_url, the URL of one) and the parameters that came with it; the size limit
    is checked before any parsing. Whether the URL may be fetched is the core's decision (imgsearch.fetch)."""
    content_type = request.headers.get("content-type") or ""
    mime = content_type.split(";", 1)[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        _check_body_size(int(declared), mime, max_bytes)
    body = request.raw_body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    _check_body_size(len(body), mime, max_bytes)
    fields: dict[str, Any] = dict(query_params(request))
    if mime == MULTIPART:
        parts = parse_multipart(content_type, body)
        image = parts.pop(FILE_FIELD, None)
        fields.update({name: data.decode("utf-8", "replace") for name, data in parts.items()})
    elif mime == JSON:
        document = _json_object(body)
        if accept_url and "url" in document:
            if "image" in document:
                raise BadRequest("send either 'image' or 'url', not both")
            url = document.pop("url")
            if not isinstance(url, str) or not url:
                raise BadRequest("'url' must be an http:// or https:// URL")
            fields.update(document)
            return Upload(None, fields, url=url)
        image = _base64_image(document.pop("image", None))
        fields.update(document)
    elif mime in RAW_TYPES:
        image = body
    else:
        raise UnsupportedMediaType(f"unsupported Content-Type {mime or '(none)'!r}; use one of "
                                   f"{', '.join(UPLOAD_CONTENT_TYPES)}")
    if image is None:
        raise BadRequest(_NO_IMAGE_OR_URL if accept_url else _NO_IMAGE)
    if not image:
        raise BadRequest("the uploaded image is empty (0 bytes)")
    if len(image) > max_bytes:
        raise ImageTooLargeError(_too_large("the image", len(image), max_bytes))
    return Upload(image, fields)


def max_body_bytes(max_bytes: int, mime: str = JSON) -> int:
    """The largest body that can carry an image of max_bytes as `mime` (JSON, the default, is the largest)."""
    if mime == JSON:
        return math.ceil(max_bytes / 3) * 4 + _ENVELOPE  # base64 grows the image by 4/3
    if mime == MULTIPART:
        return max_bytes + _ENVELOPE
    return max_bytes


def _check_body_size(size: int, mime: str, max_bytes: int) -> None:
    if size > max_body_bytes(max_bytes, mime):
        raise ImageTooLargeError(_too_large("the request body", size, max_bytes))


def _too_large(what: str, size: int, max_bytes: int) -> str:
    return (f"{what} is {size} bytes; this service accepts images of at most {max_bytes} bytes "
            f"(IMGSEARCH_MAX_IMAGE_BYTES)")


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """multipart/form-data -> {field name: raw bytes}, with the standard library's MIME parser."""
    if "boundary=" not in content_type:
        raise BadRequest("multipart/form-data without a boundary parameter in Content-Type")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=policy.default).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("the multipart/form-data body could not be parsed")
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[str(name)] = part.get_payload(decode=True) or b""
    return parts


def _json_object(body: bytes) -> dict:
    try:
        document = json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest("the JSON body must be an object: {\"image\": \"<base64>\", ...parameters}")
    return document


def _base64_image(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("'image' must be a base64 string")
    if value.startswith("data:"):  # a data URL, as browsers' FileReader.readAsDataURL produce
        value = value.partition(",")[2]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("'image' is not valid base64") from None


def query_params(request) -> dict[str, Any]:
    """The query string, last value of each name; every value of the repeatable `filter`, as a list."""
    params = request.query_params or {}
    found = dict(params)
    if FILTER in found:
        found[FILTER] = params.getlist(FILTER) if hasattr(params, "getlist") else [found[FILTER]]
    return found


# -- search parameters -------------------------------------------------------------------------------------
FILTER = "filter"


def search_options(fields: Mapping[str, Any], *, max_page_size: int) -> SearchOptions:
    """/search, /similar: min_score, min_confidence, page, page_size, mode, prefix, rerank, filter, collapse. Pages
    stop at max_page(max_page_size), a bound the OpenAPI document can state, so any page of any size stays inside
    the core's result window."""
    min_score = number(fields, "min_score", -1.0, 1.0)  # errors are reported in the parameters' order
    page, page_size = page_options(fields, max_page_size=max_page_size)
    return SearchOptions(
        min_score=min_score,
        page=page,
        page_size=page_size,
        mode=choice(fields, "mode", SEARCH_MODES),
        key_prefix=_text(fields.get("prefix")) or None,
        rerank=boolean(fields, "rerank"),
        min_confidence=number(fields, "min_confidence", 0.0, 1.0),
        filters=filters(fields.get(FILTER)),
        collapse=bool(boolean(fields, "collapse")),
    )


def page_options(fields: Mapping[str, Any], *, max_page_size: int) -> tuple[int, int]:
    """(page, page_size) of a search or a listing: pages stop at max_page(max_page_size)."""
    return (integer(fields, "page", 1, max_page(max_page_size), default=1),
            integer(fields, "page_size", 1, max_page_size, default=min(DEFAULT_PAGE_SIZE, max_page_size)))


def filters(value: Any) -> tuple[Filter, ...]:
    """`filter`: one name=value text (a form field), or a list of them (a repeated query parameter, a JSON array);
    the core parses and bounds them (imgsearch.labels)."""
    if value is None:
        return ()
    terms = [value] if isinstance(value, str) else value
    if not (isinstance(terms, list) and terms and all(isinstance(term, str) for term in terms)):
        raise BadRequest("filter is name=value (folder=cats/, tag.color=red, meta.author=ann), or a list of them")
    return parse_filters(terms)


def demo_options(fields: Mapping[str, Any], *, max_page_size: int) -> SearchOptions:
    """/searchByImage keeps the original demo's names and defaults: score (0.8), page (1-based), pageSize (10)."""
    return SearchOptions(
        min_score=number(fields, "score", -1.0, 1.0, default=0.8),
        page=integer(fields, "page", 1, max_page(max_page_size), default=1),
        page_size=integer(fields, "pageSize", 1, max_page_size, default=min(DEFAULT_PAGE_SIZE, max_page_size)),
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.strip() if isinstance(value, str) else str(value)


# A parameter is absent only when missing (None): any value, an empty one too, must be valid or is a 400, so the
# server accepts exactly what the OpenAPI document describes.
def number(fields: Mapping[str, Any], name: str, low: float, high: float, *, default: float | None = None):
    value = fields.get(name)
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        parsed = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number between {low:g} and {high:g}, got {value!r}") from None
    if not (math.isfinite(parsed) and low <= parsed <= high):
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return parsed


def integer(fields: Mapping[str, Any], name: str, low: int, high: int, *, default: int) -> int:
    value = fields.get(name)
    if value is None:
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        parsed = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {value!r}") from None
    if not low <= parsed <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {parsed}")
    return parsed


def boolean(fields: Mapping[str, Any], name: str) -> bool | None:
    value = fields.get(name)
    if value is None or isinstance(value, bool):
        return value
    if value not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value == "true"


def choice(fields: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = fields.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


# -- uploads ----------------------------------------------------------------------------------------------
UPLOAD_FIELDS = ("content_type", "filename")


@dataclass(frozen=True)
class UploadRequest:
    content_type: str
    filename: str | None = None


def upload_request(request) -> UploadRequest:
    """POST /uploads: JSON {"content_type": "image/jpeg", "filename": "cat.jpg"}. Only the form is checked here;
    which types are accepted is the core's decision (imgsearch.uploads)."""
    body = request.raw_body or b""
    document = _json_object(body.encode("utf-8") if isinstance(body, str) else body)
    unknown = sorted(set(document) - set(UPLOAD_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; send {{\"content_type\": "
                         f"\"image/jpeg\", \"filename\": \"optional, for display\"}}")
    content_type, filename = document.get("content_type"), document.get("filename")
    if not isinstance(content_type, str):
        raise BadRequest("'content_type' is required: the image's type, e.g. \"image/jpeg\"")
    if filename is not None and not isinstance(filename, str):
        raise BadRequest("'filename' must be a string (it is only shown, never used for the key)")
    return UploadRequest(content_type, filename)


# -- indexed images ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRef:
    bucket: str
    key: str


def image_ref(request, settings: Settings, path_key: str | None = None) -> ImageRef:
    """Which indexed image a request names: the key from the path (percent-encoded, decoded once here) or from
    ?key=, the bucket from ?bucket= or the configured default, named as documents name it (canonical_bucket:
    folders resolved; a name nothing can have is the core's InvalidRequestError, a 400). Whether the bucket may
    be read at all is the core's decision (storages.py), not this function's."""
    params = query_params(request)
    key = unquote(path_key) if path_key is not None else params.get("key")
    if not key:
        raise BadRequest("say which image: /images/{key} with the key percent-encoded, or ?key=")
    bucket = (params.get("bucket") or "").strip() or settings.bucket
    if not bucket:
        raise BadRequest("say which bucket or folder the image is in: ?bucket= (no IMGSEARCH_BUCKET is set)")
    return ImageRef(canonical_bucket(bucket), key)
