"""The search API and web page: a Chalice app whose routes translate HTTP into calls of the core library.

`app` is the Lambda handler. Nothing heavy is imported here: get_service() builds the ImageSearch on first use,
and TensorFlow loads only when the first image is embedded. `imgsearch serve` and the tests call use_service().
Errors are JSON {"message", "code"}, mapped from the core's error classes in chalicelib/errors.py.
"""

from __future__ import annotations

import functools
import hmac
import threading
from pathlib import Path

from chalice import Chalice, Response

from chalicelib import health as probes
from chalicelib import inputs, openapi
from chalicelib.errors import (MissingApiKey, ServerMisconfigured, WrongApiKey, error_response,
                               reshape_chalice_error)
from imgsearch.config import Settings
from imgsearch.errors import ConfigError, ImgSearchError
from imgsearch.storage import FolderStorage

app = Chalice(app_name="imgsearch-search")
app.api.binary_types = sorted(set(app.api.binary_types) | set(inputs.BINARY_TYPES))

PUBLIC_ROUTES = {("GET", "/"), ("GET", "/health")}  # everything else needs x-api-key when one is configured
PAGE_FILE = Path(__file__).resolve().parent / "chalicelib" / "page.html"

_service = None
_settings: Settings | None = None
_lock = threading.Lock()
_local = threading.local()


# -- the service: built once per container, replaceable -----------------------------------------------------
def current_settings() -> Settings:
    """The service's settings, or (before it is built) the environment's, read once."""
    global _settings
    if _service is not None:
        return _service.settings
    if _settings is None:
        try:
            _settings = Settings.from_env()
        except ConfigError as exc:  # the operator's environment, not the client's request
            raise ServerMisconfigured(str(exc)) from exc
    return _settings


def get_service():
    """The ImageSearch for this process, built from the environment on first use (index created if missing)."""
    global _service
    if _service is None:
        with _lock:
            if _service is None:
                from imgsearch.pipeline import ImageSearch

                try:
                    service = ImageSearch(current_settings())
                    service.index.ensure_index()
                except ConfigError as exc:  # e.g. an Elasticsearch setting: the operator's to fix, not a 400
                    raise ServerMisconfigured(str(exc)) from exc
                _service = service
    return _service


def use_service(service) -> None:
    """Serve this ImageSearch from now on (None: build one from the environment on next use)."""
    global _service, _settings
    with _lock:
        _service, _settings = service, None


def current_request():
    """This request. Chalice's app.current_request is one attribute per process, which `chalice local`'s
    threads overwrite; the middleware hands every request its own."""
    return getattr(_local, "request", None) or app.current_request


@app.middleware("http")
def guard(request, get_response):
    _local.request = request
    try:
        if (request.method, request.path) not in PUBLIC_ROUTES:
            check_api_key(current_settings().api_key, request.headers.get("x-api-key"))
        return reshape_chalice_error(get_response(request))
    except Exception as exc:
        return error_response(exc)
    finally:
        _local.request = None


def check_api_key(expected: str | None, given: str | None) -> None:
    if not expected:
        return
    if not given:
        raise MissingApiKey("this API needs an API key: send it in the x-api-key header")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise WrongApiKey("the x-api-key header does not match this API's key")


def json_errors(view):
    """Turn any exception of a view into the JSON error the table in chalicelib/errors.py assigns."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except Exception as exc:
            return error_response(exc)
    return wrapper


# -- search ----------------------------------------------------------------------------------------------
@app.route("/search", methods=["POST"], content_types=inputs.UPLOAD_CONTENT_TYPES)
@json_errors
def search():
    settings = current_settings()
    upload = inputs.read_upload(current_request(), max_bytes=settings.max_image_bytes)
    options = inputs.search_options(upload.fields, max_page_size=settings.max_page_size)
    return get_service().search_image(upload.image, **options).to_dict()


@app.route("/searchByImage", methods=["POST"], content_types=inputs.UPLOAD_CONTENT_TYPES)
@json_errors
def search_by_image():
    """The original demo's contract: a JSON list of {score, imageName, imageUrl}."""
    settings = current_settings()
    upload = inputs.read_upload(current_request(), max_bytes=settings.max_image_bytes)
    options = inputs.demo_options(upload.fields, max_page_size=settings.max_page_size)
    results = get_service().search_image(upload.image, **options)
    return [{"score": hit["score"], "imageName": hit["key"], "imageUrl": hit["url"]} for hit in results.hits]


@app.route("/images/{key}/similar", methods=["GET"])
@json_errors
def similar(key):
    return _similar(inputs.image_ref(current_request(), current_settings(), key))


@app.route("/similar", methods=["GET"])
@json_errors
def similar_by_query():
    return _similar(inputs.image_ref(current_request(), current_settings()))


def _similar(ref: inputs.ImageRef) -> dict:
    options = inputs.search_options(inputs.query_params(current_request()),
                                    max_page_size=current_settings().max_page_size)
    return get_service().similar_to(ref.bucket, ref.key, **options).to_dict()


# -- indexed images --------------------------------------------------------------------------------------
@app.route("/images/{key}", methods=["GET"])
@json_errors
def describe(key):
    ref = inputs.image_ref(current_request(), current_settings(), key)
    return get_service().describe(ref.bucket, ref.key)


@app.route("/image", methods=["GET"])
@json_errors
def describe_by_query():
    ref = inputs.image_ref(current_request(), current_settings())
    return get_service().describe(ref.bucket, ref.key)


@app.route("/images/{key}/content", methods=["GET"])
@json_errors
def content(key):
    return _content(inputs.image_ref(current_request(), current_settings(), key))


@app.route("/image/content", methods=["GET"])
@json_errors
def content_by_query():
    return _content(inputs.image_ref(current_request(), current_settings()))


def _content(ref: inputs.ImageRef) -> Response:
    """The bytes of an indexed image in a folder (browsers cannot open file:// URLs from an http page); for an
    S3 bucket, a redirect to its presigned URL. Only indexed images: the bucket parameter opens no other file."""
    service = get_service()
    document = service.document(ref.bucket, ref.key)  # NotFoundError unless indexed
    storage = service.storage(ref.bucket)
    if not isinstance(storage, FolderStorage):
        return Response(body="", status_code=302, headers={"Location": storage.url(ref.key)})
    data = storage.read(ref.key, max_bytes=service.settings.max_image_bytes)
    content_type = document.content_type if document.content_type in app.api.binary_types else \
        "application/octet-stream"
    return Response(body=data, headers={"Content-Type": content_type, "Cache-Control": "private, max-age=300"})


# -- service ---------------------------------------------------------------------------------------------
@app.route("/stats", methods=["GET"])
@json_errors
def stats():
    return get_service().stats()


@app.route("/health", methods=["GET"])
@json_errors
def health():
    """200 when the index (and the configured bucket, if any) answer; 503 naming the part that is down."""
    try:
        service = get_service()
    except ImgSearchError as exc:  # building the service touches the index (ensure_index)
        report = {"index": {"ok": False, "error": str(exc)}}
    else:
        report = {"index": probes.index_health(service)}
        if service.settings.bucket:
            report["storage"] = probes.storage_health(service, service.settings.bucket)
    down = [part for part, state in report.items() if not state.get("ok")]
    return Response(body={"ok": not down, "down": down, **report}, status_code=503 if down else 200)


@app.route("/openapi.json", methods=["GET"])
@json_errors
def openapi_document():
    request, settings = current_request(), current_settings()
    path = request.context.get("path") or "/openapi.json"  # "/<stage>/openapi.json" behind API Gateway
    return openapi.document(base_path=path[:-len("/openapi.json")] or "/", max_page_size=settings.max_page_size,
                            max_image_bytes=settings.max_image_bytes)


@app.route("/", methods=["GET"])
@json_errors
def index():
    return Response(body=_page(), headers={"Content-Type": "text/html; charset=utf-8"})


@functools.lru_cache(maxsize=1)
def _page() -> str:
    return PAGE_FILE.read_text(encoding="utf-8")
