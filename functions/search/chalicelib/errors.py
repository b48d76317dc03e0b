"""Every error the API answers, as JSON {"message": ..., "code": ...}, from ONE table of class -> HTTP status.

The core's typed errors say what happened; this table says what HTTP makes of it. Problems the adapter finds in
the request itself (a missing file, a bad parameter, a missing API key) have their own small classes here.
"""

from __future__ import annotations

import logging
import re

from chalice import Response

from imgsearch.errors import (BadImageError, ConfigError, ImageTooLargeError, ImgSearchError, InvalidRequestError,
                              NotFoundError, StorageNotAllowedError, TransientError, UploadsUnavailableError,
                              UrlFetchError)

log = logging.getLogger("imgsearch.api")


class ApiError(Exception):
    """Something wrong with the request, found before the core is called."""


class BadRequest(ApiError):
    """A parameter is missing or out of range, or the body is malformed."""


class MissingApiKey(ApiError):
    """An API key is configured and the request has no x-api-key header."""


class WrongApiKey(ApiError):
    """The x-api-key header does not match the configured key."""


class UnsupportedMediaType(ApiError):
    """The request body has a Content-Type this route does not accept."""


# (error class, HTTP status, code). First match wins, so subclasses come before their bases:
# ImageTooLargeError is a BadImageError, BackendUnavailableError is a TransientError.
ERROR_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (BadRequest, 400, "bad_request"),
    (MissingApiKey, 401, "missing_api_key"),
    (WrongApiKey, 403, "wrong_api_key"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (ImageTooLargeError, 413, "image_too_large"),
    (BadImageError, 415, "bad_image"),
    (NotFoundError, 404, "not_found"),
    (StorageNotAllowedError, 404, "not_found"),  # a bucket or folder this API does not serve: as if absent
    (InvalidRequestError, 400, "bad_request"),  # the core's own check of request values (page, min_score, mode)
    (UploadsUnavailableError, 409, "uploads_unavailable"),  # no S3 bucket to put an upload in
    (UrlFetchError, 502, "url_fetch_failed"),  # search by URL: the URL's server failed us (DNS, timeout, 404)
    (TransientError, 503, "unavailable"),  # the index or object store is down: retry later
    (ConfigError, 500, "server_misconfigured"),  # the operator's environment; or exact search without painless
    (ImgSearchError, 500, "internal_error"),  # e.g. WeightsError, IncompatibleIndexError: the operator must act
)
RETRY_AFTER_SECONDS = 5
# 5xx answers say what kind of failure, and which settings to look at; never the exception's text (paths, hosts).
SERVER_MESSAGES = {"unavailable": "the index or the object store is unreachable; retry in a few seconds",
                   "server_misconfigured": "the server is misconfigured",
                   "internal_error": "internal error"}
_SETTING = re.compile(r"\b(?:IMGSEARCH|AWS)_[A-Z0-9_]+")
_CHALICE_CODES = {"UnsupportedMediaType": "unsupported_media_type", "MethodNotAllowedError": "method_not_allowed",
                  "BadRequest": "bad_request", "InternalServerError": "internal_error"}


def status_of(exc: BaseException) -> tuple[int, str]:
    for cls, status, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def error_response(exc: BaseException) -> Response:
    status, code = status_of(exc)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else {}
    return Response(body={"message": public_message(exc, status, code), "code": code}, status_code=status,
                    headers=headers)


def public_message(exc: BaseException, status: int, code: str) -> str:
    """What the client reads: a 4xx says what is wrong with its request; a 5xx only what kind of failure it is
    and the settings it names (the log has the rest)."""
    if isinstance(exc, StorageNotAllowedError):
        return "no such image: this API serves no bucket or folder of that name"
    if (status < 500 and isinstance(exc, (ApiError, ImgSearchError))) or isinstance(exc, UrlFetchError):
        return str(exc)  # a UrlFetchError's message names the URL's host and what went wrong, never an address
    if isinstance(exc, ImgSearchError):
        log.error("%s: %s", code, exc)
    else:  # a bug: log the traceback
        log.error("unexpected error", exc_info=exc)
    settings = sorted(set(_SETTING.findall(str(exc)))) if isinstance(exc, ImgSearchError) else []
    named = f" ({', '.join(settings)})" if settings else ""
    return f"{SERVER_MESSAGES.get(code, 'internal error')}{named}; the server log has the details"


def reshape_chalice_error(response: Response) -> Response:
    """Chalice answers some requests itself ({"Code": ..., "Message": ...}, e.g. 415 for a Content-Type a route
    does not declare): give those the same shape as ours."""
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = _CHALICE_CODES.get(body["Code"]) or re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"])).lower()
        response.body = {"message": body["Message"], "code": code}
    return response
