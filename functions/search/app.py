"""The search API and web page: a Chalice app whose routes translate HTTP into calls of the core library.

`app` is the Lambda handler. Nothing heavy is imported here: imgsearch.service builds the ImageSearch on first
use, and TensorFlow loads only when the first image is embedded. `imgsearch serve` and the tests call
service.use(). Errors are JSON {"message", "code"}: the middleware maps every exception once, with the table
in chalicelib/errors.py, and gives Chalice's own error answers the same shape. Each search adds powertools
Metrics (imgsearch.metrics: queries, time, verified hits), written once per request by the middleware; Tracer
records X-Ray subsegments where the function has active tracing.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from pathlib import Path

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.metrics import MetricUnit
from chalice import Chalice, ChaliceUnhandledError, Response

from chalicelib import health as probes
from chalicelib import inputs, openapi
from chalicelib.errors import MissingApiKey, WrongApiKey, error_response, reshape_chalice_error
from imgsearch import fetch, service, uploads
from imgsearch import metrics as names
from imgsearch.confidence import CONFIDENT
from imgsearch.errors import ConfigError, ImgSearchError
from imgsearch.storage import FolderStorage

app = Chalice(app_name="imgsearch-search")
app.api.binary_types = sorted(set(app.api.binary_types) | set(inputs.BINARY_TYPES))
PUBLIC_ROUTES = {("GET", "/"), ("GET", "/health")}  # everything else needs x-api-key when one is configured
PAGE_FILE = Path(__file__).resolve().parent / "chalicelib" / "page.html"
_local = threading.local()
SERVICE = "imgsearch-search"
metrics = names.make_metrics(SERVICE)
tracer = Tracer(service=SERVICE)


def current_request():
    """This request. Chalice's app.current_request is one attribute per process, which `chalice local`'s
    threads overwrite; the middleware hands every request its own."""
    return getattr(_local, "request", None) or app.current_request


class _ViewFailed(ChaliceUnhandledError):
    """Carries a view's exception (its __cause__) past Chalice, which would answer its own 500, to guard()."""


def route(path: str, **options):
    """app.route, with the view's exceptions handed to the middleware to be mapped."""
    def register(view):
        @functools.wraps(view)
        def mapped(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except Exception as exc:
                raise _ViewFailed(str(exc)) from exc

        app.route(path, **options)(mapped)
        return view

    return register


@app.middleware("http")
def guard(request, get_response):
    _local.request = request
    try:
        if (request.method, request.path) not in PUBLIC_ROUTES:
            check_api_key(service.settings().api_key, request.headers.get("x-api-key"))
        return reshape_chalice_error(get_response(request))
    except _ViewFailed as failed:
        return error_response(failed.__cause__)
    except Exception as exc:
        return error_response(exc)
    finally:
        _local.request = None
        names.publish(metrics)  # one line per request (a Lambda instance serves one request at a time)


def check_api_key(expected: str | None, given: str | None) -> None:
    if not expected:
        return
    if not given:
        raise MissingApiKey("this API needs an API key: send it in the x-api-key header")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise WrongApiKey("the x-api-key header does not match this API's key")


# -- search ----------------------------------------------------------------------------------------------
@route("/search", methods=["POST"], content_types=inputs.UPLOAD_CONTENT_TYPES)
def search():
    settings = service.settings()
    upload = inputs.read_upload(current_request(), max_bytes=settings.max_image_bytes, accept_url=True)
    options = inputs.search_options(upload.fields, max_page_size=settings.max_page_size)
    # {"url": ...}: fetched by the core under its rules (public hosts only, redirects, limits); see imgsearch.fetch
    image = upload.image if upload.url is None else fetch.fetch_image(upload.url, settings)
    return _measured(lambda searcher: searcher.search_image(image, options)).to_dict()


@route("/searchByImage", methods=["POST"], content_types=inputs.UPLOAD_CONTENT_TYPES)
def search_by_image():
    """The original demo's contract: a JSON list of {score, imageName, imageUrl}."""
    settings = service.settings()
    upload = inputs.read_upload(current_request(), max_bytes=settings.max_image_bytes)
    options = inputs.demo_options(upload.fields, max_page_size=settings.max_page_size)
    results = _measured(lambda searcher: searcher.search_image(upload.image, options))
    return [{"score": hit.score, "imageName": hit.key, "imageUrl": hit.url} for hit in results.hits]


@route("/images/{key}/similar", methods=["GET"])
def similar(key):
    return _similar(inputs.image_ref(current_request(), service.settings(), key))


@route("/similar", methods=["GET"])
def similar_by_query():
    return _similar(inputs.image_ref(current_request(), service.settings()))


def _similar(ref: inputs.ImageRef) -> dict:
    options = inputs.search_options(inputs.query_params(current_request()),
                                    max_page_size=service.settings().max_page_size)
    return _measured(lambda searcher: searcher.similar_to(ref.bucket, ref.key, options)).to_dict()


@tracer.capture_method(capture_response=False)  # results hold presigned URLs: not for traces
def _measured(run):
    """run(searcher) -> SearchResults, with its metrics added: one query, its time, its verified hits."""
    started = time.perf_counter()
    results = run(service.get().searcher)
    metrics.add_metric(name=names.QUERIES, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=names.QUERY_MS, unit=MetricUnit.Milliseconds,
                       value=(time.perf_counter() - started) * 1000)
    metrics.add_metric(name=names.HITS_VERIFIED, unit=MetricUnit.Count,
                       value=sum(1 for hit in results.hits if hit.verified))
    return results


# -- indexed images --------------------------------------------------------------------------------------
@route("/images/{key}", methods=["GET"])
def image_info(key):
    ref = inputs.image_ref(current_request(), service.settings(), key)
    return service.get().searcher.image_info(ref.bucket, ref.key)


@route("/image", methods=["GET"])
def image_info_by_query():
    ref = inputs.image_ref(current_request(), service.settings())
    return service.get().searcher.image_info(ref.bucket, ref.key)


@route("/images/{key}/content", methods=["GET"])
def content(key):
    return _content(inputs.image_ref(current_request(), service.settings(), key))


@route("/image/content", methods=["GET"])
def content_by_query():
    return _content(inputs.image_ref(current_request(), service.settings()))


def _content(ref: inputs.ImageRef) -> Response:
    """The bytes of an indexed image in a folder (browsers cannot open file:// URLs from an http page); for an
    S3 bucket, a redirect to its presigned URL. Only indexed images in an allowed bucket or folder: the bucket
    parameter opens no other file, whatever the index says."""
    search = service.get()
    storage = search.storages.get(ref.bucket)  # StorageNotAllowedError (404) unless the settings allow it
    document = search.searcher.document(ref.bucket, ref.key)  # NotFoundError unless indexed
    if not isinstance(storage, FolderStorage):
        return Response(body="", status_code=302, headers={"Location": storage.url(ref.key)})
    data = storage.read(ref.key, max_bytes=search.settings.max_image_bytes)
    content_type = document.content_type if document.content_type in app.api.binary_types else \
        "application/octet-stream"
    # nosniff: a polyglot (a GIF that is also JavaScript, a JPEG with HTML appended) is only ever this type
    return Response(body=data, headers={"Content-Type": content_type, "Cache-Control": "private, max-age=300",
                                        "X-Content-Type-Options": "nosniff"})


# -- uploads ---------------------------------------------------------------------------------------------
@route("/uploads", methods=["POST"], content_types=[inputs.JSON])
def new_upload():
    """A presigned POST for the page to put one image into the bucket itself (imgsearch.uploads); the bucket's
    notification then indexes it like any other upload."""
    wanted = inputs.upload_request(current_request())
    search = service.get()
    return uploads.new_upload(search.settings, search.storages, wanted.content_type,
                              filename=wanted.filename).to_dict()


@route("/duplicates", methods=["GET"])
def duplicate_groups():
    """Copies flagged at ingest (imgsearch.duplicates), grouped by their original."""
    page = inputs.page_options(inputs.query_params(current_request()), max_page_size=service.settings().max_page_size)
    return service.get().searcher.duplicate_groups(*page)


# -- service ---------------------------------------------------------------------------------------------
@route("/stats", methods=["GET"])
def stats():
    return service.get().stats()


@route("/health", methods=["GET"])
def health():
    """200 when the index (and the configured bucket, if any) answer; 503 naming the part that is down. Public:
    it says which part, never why (the log has the reason)."""
    try:
        search = service.get()
    except ConfigError:  # the operator's environment: a 500 like every other route's
        raise
    except ImgSearchError as exc:  # building the service touches the index (ensure_index)
        report = {"index": {"ok": False, "error": str(exc)}}
    else:
        report = {"index": search.health()}
        if search.settings.bucket:
            report["storage"] = probes.storage_health(search.storages, search.settings.bucket)
    body = probes.public_report(report)
    return Response(body=body, status_code=503 if body["down"] else 200)


@route("/openapi.json", methods=["GET"])
def openapi_document():
    request, settings = current_request(), service.settings()
    path = request.context.get("path") or "/openapi.json"  # "/<stage>/openapi.json" behind API Gateway
    return openapi.document(base_path=path[:-len("/openapi.json")] or "/", max_page_size=settings.max_page_size,
                            max_image_bytes=settings.max_image_bytes)


@route("/", methods=["GET"])
def index():
    return Response(body=_page(), headers={"Content-Type": "text/html; charset=utf-8"})


@functools.lru_cache(maxsize=1)
def _page() -> str:
    """The page, with the confidence line the measurements chose (imgsearch.confidence) as its default."""
    return PAGE_FILE.read_text(encoding="utf-8").replace("__CONFIDENT__", f"{CONFIDENT:.2f}")
