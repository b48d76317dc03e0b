"""The OpenAPI 3.0 document of the search API, served at GET /openapi.json.

tests/api checks that it is a valid OpenAPI document and that its paths and methods are exactly the app's routes.
The limits that depend on settings (page size, image bytes) are filled in when the document is served.
"""

from __future__ import annotations

import copy

from imgsearch.confidence import CONFIDENT
from imgsearch.fetch import MAX_REDIRECTS, MAX_URL_LENGTH, URL_PATTERN
from imgsearch.labels import MAX_FILTERS, MAX_NAME, MAX_VALUE
from imgsearch.options import DEFAULT_PAGE_SIZE, MAX_PREFIX_LENGTH, MAX_RESULT_WINDOW, max_page
from imgsearch.storage import MAX_KEY_BYTES
from imgsearch.uploads import ACCEPTED_TYPES, MAX_FILENAME

from .inputs import IMAGE_TYPES

_ERROR = {"$ref": "#/components/schemas/Error"}
_PAGE_RULE = (f"pages stop where page x page_size would pass {MAX_RESULT_WINDOW} hits, at the maximum stated here "
              "(the largest page size's last page); 400 beyond")
# canonical_bucket's rule: empty (the default), an absolute folder path, or an S3 bucket name (s3:// allowed),
# spaces around ignored.
_BUCKET_PATTERN = r"^\s*(|/[^\u0000]*|(s3://)?[A-Za-z0-9][A-Za-z0-9._-]{1,254}/*)\s*$"


# labels.parse_filters' rule for one name=value text: folder, tag.<name> or meta.<name>, the name without "=" or
# control characters (the first "=" ends it)
_FILTER_TERM = {"type": "string",
                "pattern": rf"^(folder|(tag|meta)\.[^=\u0000-\u001f]{{1,{MAX_NAME}}})=[\s\S]{{0,{MAX_VALUE}}}$"}
_FILTER_RULE = (f"only images whose labels match: folder=cats/ (the key's own folder, not its subfolders; folder= "
                f"the top), tag.<name>=<value> (the object's S3 tags), meta.<name>=<value> (its x-amz-meta-* "
                f"metadata; names in any case). Repeat it: every name must match, and a name given twice matches "
                f"either value; at most {MAX_FILTERS} in all (400 beyond). "
                f"Images indexed before labels were kept carry none until the next `imgsearch sync`")
_ORIGINAL = {"type": "object", "nullable": True, "required": ["id", "bucket", "key", "score"],
             "description": "a copy's group original (the first indexed of the same picture) and the cosine to the "
                            "image it was matched with; null if the image copies nothing",
             "properties": {"id": {"type": "string"}, "bucket": {"type": "string"}, "key": {"type": "string"},
                            "score": {"type": "number"}}}
_LABELS = {"type": "object", "nullable": True, "additionalProperties": {"type": "string"}}
_FILTER_LIST = {"type": "array", "items": _FILTER_TERM, "minItems": 1, "maxItems": MAX_FILTERS}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


_UPLOAD_BODY = {
    "required": True,
    "description": "The query image, in one of three ways. Parameters may also be sent as form fields or JSON keys "
                   "(they override the query string).",
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary", "minLength": 1,
                                    "description": "the image"}},
            "additionalProperties": True}},
        "application/json": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "byte", "minLength": 1,
                                     "description": "the image, base64 (a data: URL is accepted too)"}},
            "additionalProperties": True}},
        **{mime: {"schema": {"type": "string", "format": "binary", "minLength": 1}}
           for mime in (*IMAGE_TYPES, "application/octet-stream")},
    },
}

# POST /search also takes the image's URL: JSON {"url": ...} instead of {"image": ...}, exactly one of the two.
# URL_PATTERN is the form imgsearch.fetch.parse_url checks (anything else is a 400): http or https, a host and port,
# no credentials, no spaces or control characters. Where the host points is known only once it is resolved.
_SEARCH_BODY = copy.deepcopy(_UPLOAD_BODY)
_SEARCH_BODY["description"] = ("The query image, in one of three ways, or its URL (JSON {\"url\": ...}). Parameters "
                               "may also be sent as form fields or JSON keys (they override the query string).")
_SEARCH_BODY["content"]["application/json"]["schema"] = {
    "type": "object",
    "description": "exactly one of `image` and `url` (both, or neither: 400)",
    "properties": {
        "image": _UPLOAD_BODY["content"]["application/json"]["schema"]["properties"]["image"],
        "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH, "pattern": URL_PATTERN,
                "description": "where the server fetches the query image: http or https, no credentials; the host "
                               "must resolve to public internet addresses only (loopback, private, link-local, "
                               f"multicast and reserved ones are refused: 400), at most {MAX_REDIRECTS} redirects, "
                               "each checked the same way (400 beyond); the image's byte limit is enforced while "
                               "it streams (413); a server that fails (no such host, no answer within the time "
                               "limit, an error status) is a 502"},
        "filter": {**_FILTER_LIST, "description": _FILTER_RULE}},
    "oneOf": [{"required": ["image"]}, {"required": ["url"]}],
    "additionalProperties": True}

_UPLOAD_ERRORS = {
    "400": _ref("responses", "BadRequest"),
    "401": _ref("responses", "MissingApiKey"),
    "403": _ref("responses", "WrongApiKey"),
    "413": _ref("responses", "TooLarge"),
    "415": _ref("responses", "UnsupportedImage"),
    "503": _ref("responses", "Unavailable"),
}
_LOOKUP_ERRORS = {
    "400": _ref("responses", "BadRequest"),
    "401": _ref("responses", "MissingApiKey"),
    "403": _ref("responses", "WrongApiKey"),
    "404": _ref("responses", "NotFound"),
    "503": _ref("responses", "Unavailable"),
}
_SEARCH_PARAMS = [_ref("parameters", name)
                  for name in ("MinScore", "MinConfidence", "Page", "PageSize", "Mode", "Prefix", "Rerank", "Filter",
                               "Collapse")]
_BY_PATH = [_ref("parameters", "KeyInPath"), _ref("parameters", "Bucket")]
_BY_QUERY = [_ref("parameters", "KeyInQuery"), _ref("parameters", "Bucket")]

_IMAGE_CONTENT = {
    "200": {"description": "the image's bytes (folder storage)",
            "content": {mime: {"schema": {"type": "string", "format": "binary"}}
                        for mime in (*IMAGE_TYPES, "application/octet-stream")}},
    "302": {"description": "S3 storage: a redirect to the object's presigned URL",
            "headers": {"Location": {"schema": {"type": "string"}}}},
    **_LOOKUP_ERRORS,
}


def _similar(summary: str, key_params: list) -> dict:
    return {"get": {"summary": summary, "tags": ["search"], "parameters": [*key_params, *_SEARCH_PARAMS],
                    "responses": {"200": _json(_ref("schemas", "SearchResults"), "hits, best first; the image "
                                               "itself is left out"), **_LOOKUP_ERRORS}}}


def _describe(summary: str, key_params: list) -> dict:
    return {"get": {"summary": summary, "tags": ["images"], "parameters": key_params,
                    "responses": {"200": _json(_ref("schemas", "ImageInfo"), "what the index knows of the image"),
                                  **_LOOKUP_ERRORS}}}


def _content(summary: str, key_params: list) -> dict:
    return {"get": {"summary": summary, "tags": ["images"], "parameters": key_params,
                    "responses": copy.deepcopy(_IMAGE_CONTENT)}}


OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "imgsearch search API",
        "version": "1.0.0",
        "description": (
            "Search images by image: VGG19 features, cosine similarity. Scores are cosine similarities in [-1, 1]. "
            "Keys may contain '/': in a path, percent-encode them (encodeURIComponent); the ?key= forms take any key. "
            "When the service has an API key, every route except GET / and GET /health needs the x-api-key header. "
            "On AWS, API Gateway accepts request bodies up to 10 MB and Lambda synchronous payloads up to 6 MB "
            "(binary bodies arrive base64-encoded, so about 4.5 MB of image); IMGSEARCH_MAX_IMAGE_BYTES sets this "
            "service's own limit."),
    },
    "servers": [{"url": "/"}],
    "tags": [{"name": "search"}, {"name": "images"}, {"name": "service"}],
    "security": [{}, {"ApiKey": []}],
    "paths": {
        "/search": {"post": {
            "summary": "Search with an uploaded image, or the URL of one", "tags": ["search"],
            "parameters": _SEARCH_PARAMS, "requestBody": _SEARCH_BODY,
            "responses": {"200": _json(_ref("schemas", "SearchResults"), "hits, best first"), **_UPLOAD_ERRORS,
                          "502": _ref("responses", "UrlFetchFailed")}}},
        "/searchByImage": {"post": {
            "summary": "The original demo's search (kept for its clients)", "tags": ["search"],
            "parameters": [
                {"name": "score", "in": "query", "description": "lowest cosine similarity to return",
                 "schema": {"type": "number", "minimum": -1, "maximum": 1, "default": 0.8}},
                {"name": "page", "in": "query", "description": f"1-based page number; {_PAGE_RULE}",
                 "schema": {"type": "integer", "minimum": 1, "default": 1}},
                {"name": "pageSize", "in": "query", "description": "hits per page",
                 "schema": {"type": "integer", "minimum": 1, "default": DEFAULT_PAGE_SIZE}}],
            "requestBody": _UPLOAD_BODY,
            "responses": {"200": _json({"type": "array", "items": _ref("schemas", "DemoHit")}, "hits, best first"),
                          **_UPLOAD_ERRORS}}},
        "/images/{key}/similar": _similar("More like an indexed image (key in the path)", _BY_PATH),
        "/similar": _similar("More like an indexed image (?key=)", _BY_QUERY),
        "/images/{key}": _describe("Metadata and URL of an indexed image (key in the path)", _BY_PATH),
        "/image": _describe("Metadata and URL of an indexed image (?key=)", _BY_QUERY),
        "/images/{key}/content": _content("The bytes of an indexed image (key in the path)", _BY_PATH),
        "/image/content": _content("The bytes of an indexed image (?key=)", _BY_QUERY),
        "/uploads": {"post": {
            "summary": "A form to put one image into the bucket from a browser (a presigned S3 POST)",
            "description": "POST `fields`, then the image as the last field, `file`, as multipart/form-data to "
                           "`url` (S3, not this API). S3 refuses a file of another Content-Type, of 0 or more than "
                           "`max_bytes` bytes, another key, or one sent after `expires_in` seconds. The bucket is "
                           "the service's IMGSEARCH_BUCKET; the key is chosen here (IMGSEARCH_UPLOAD_PREFIX, a "
                           "random id, the type's extension). Once the bucket's notification has indexed it, "
                           "GET /image?key= answers 200 and GET /similar?key= searches with it.",
            "tags": ["images"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["content_type"], "additionalProperties": False,
                "properties": {
                    "content_type": {"type": "string", "enum": list(ACCEPTED_TYPES),
                                     "description": "the image's type (image/jpg is taken as image/jpeg)"},
                    "filename": {"type": "string", "maxLength": MAX_FILENAME,
                                 "description": "the file's own name: handed back for display, never part of "
                                                "the key"}}}}}},
            "responses": {"200": _json(_ref("schemas", "UploadTicket"), "the form to send to S3"),
                          "400": _ref("responses", "BadRequest"), "401": _ref("responses", "MissingApiKey"),
                          "403": _ref("responses", "WrongApiKey"),
                          "409": _error("uploads need an S3 bucket: this service has none, or a local folder"),
                          "415": _ref("responses", "UnsupportedImage"), "503": _ref("responses", "Unavailable")}}},
        "/duplicates": {"get": {
            "summary": "Groups of copies flagged at ingest, largest first", "tags": ["images"],
            "parameters": [_ref("parameters", "Page"), _ref("parameters", "PageSize")],
            "responses": {"200": _json(_ref("schemas", "DuplicateGroups"), "a page of groups: each original and "
                                       "its copies"),
                          "400": _ref("responses", "BadRequest"), "401": _ref("responses", "MissingApiKey"),
                          "403": _ref("responses", "WrongApiKey"), "503": _ref("responses", "Unavailable")}}},
        "/stats": {"get": {
            "summary": "Index statistics", "tags": ["service"],
            "responses": {"200": _json(_ref("schemas", "Stats"),
                                       "document count, model, backend, the last refit and the ingest backlog"),
                          "401": _ref("responses", "MissingApiKey"), "403": _ref("responses", "WrongApiKey"),
                          "503": _ref("responses", "Unavailable")}}},
        "/health": {"get": {
            "summary": "Is the index (and the configured bucket) reachable?", "tags": ["service"], "security": [],
            "responses": {"200": _json(_ref("schemas", "Health"), "everything answers"),
                          "503": _json(_ref("schemas", "Health"), "a part is down; `down` names it")}}},
        "/openapi.json": {"get": {
            "summary": "This document", "tags": ["service"],
            "responses": {"200": {"description": "an OpenAPI 3.0 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "401": _ref("responses", "MissingApiKey"), "403": _ref("responses", "WrongApiKey")}}},
        "/": {"get": {
            "summary": "The search web page", "tags": ["service"], "security": [],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    },
    "components": {
        "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        "parameters": {
            "MinScore": {"name": "min_score", "in": "query", "description": "lowest cosine similarity to return",
                         "schema": {"type": "number", "minimum": -1, "maximum": 1}},
            "MinConfidence": {"name": "min_confidence", "in": "query", "description": "lowest confidence to "
                              f"return; {CONFIDENT} and up is a confident match. Only re-ranked hits have a "
                              "confidence, so this re-ranks whatever `rerank` says",
                              "schema": {"type": "number", "minimum": 0, "maximum": 1}},
            "Page": {"name": "page", "in": "query", "description": f"1-based page number; {_PAGE_RULE}",
                     "schema": {"type": "integer", "minimum": 1, "default": 1}},
            "PageSize": {"name": "page_size", "in": "query", "description": "hits per page",
                         "schema": {"type": "integer", "minimum": 1, "default": DEFAULT_PAGE_SIZE}},
            "Mode": {"name": "mode", "in": "query", "description": "exact (brute force) or knn (approximate); "
                     "default: the service's IMGSEARCH_SEARCH_MODE", "schema": {"type": "string",
                                                                                 "enum": ["exact", "knn"]}},
            "Prefix": {"name": "prefix", "in": "query", "description": "only keys starting with this; at most "
                       f"{MAX_PREFIX_LENGTH} characters, a key's limit (400 otherwise)",
                       "schema": {"type": "string", "maxLength": MAX_PREFIX_LENGTH}},
            "Collapse": {"name": "collapse", "in": "query", "description": "one hit per group of copies (GET "
                         "/duplicates), the best-ranked of each; total then counts the groups among the first "
                         "hits", "schema": {"type": "boolean", "default": False}},
            "Filter": {"name": "filter", "in": "query", "style": "form", "explode": True,
                       "description": _FILTER_RULE, "schema": _FILTER_LIST},
            "Rerank": {"name": "rerank", "in": "query", "description": "verify the best candidates with local "
                       "features and put the geometrically confirmed ones first; default: IMGSEARCH_RERANK",
                       "schema": {"type": "boolean"}},
            "Bucket": {"name": "bucket", "in": "query", "description": "the bucket (or absolute folder path) the "
                       "image is in; default: the service's IMGSEARCH_BUCKET. A bucket this service does not "
                       "serve (IMGSEARCH_ALLOWED_BUCKETS) is 404, a name no bucket can have 400",
                       "schema": {"type": "string", "pattern": _BUCKET_PATTERN}},
            "KeyInPath": {"name": "key", "in": "path", "required": True,
                          "description": f"the object key, percent-encoded ('/' as %2F); a key longer than "
                                         f"{MAX_KEY_BYTES} bytes of UTF-8 or holding NUL is no image's (404)",
                          "schema": {"type": "string", "minLength": 1}},
            "KeyInQuery": {"name": "key", "in": "query", "required": True,
                           "description": f"the object key; a key longer than {MAX_KEY_BYTES} bytes of UTF-8 "
                                          "or holding NUL is no image's (404)",
                           "schema": {"type": "string", "minLength": 1}},
        },
        "responses": {
            "BadRequest": _error("a parameter is missing or out of range, or the body has no image"),
            "MissingApiKey": _error("the service has an API key and the request has no x-api-key header"),
            "WrongApiKey": _error("the x-api-key header is wrong"),
            "NotFound": _error("no such image in the index"),
            "TooLarge": _error("the image is over the service's byte or pixel limit"),
            "UnsupportedImage": _error("not an image we can decode (corrupt, truncated, unknown format), or a "
                                       "Content-Type this route does not accept"),
            "UrlFetchFailed": _error("search by URL: the URL's server failed (no such host, no connection, no "
                                     "answer in time, a malformed answer or an error status)"),
            "Unavailable": {**_error("the index or object store is down; retry later"),
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["message", "code"], "properties": {
                "message": {"type": "string"}, "code": {"type": "string", "example": "bad_image"}}},
            "Hit": {"type": "object", "required": ["score", "key", "bucket", "url", "id"], "properties": {
                "score": {"type": "number", "minimum": -1, "maximum": 1, "description": "cosine similarity"},
                "key": {"type": "string"}, "bucket": {"type": "string"},
                "url": {"type": "string", "nullable": True,
                        "description": "presigned https URL (S3) or file:// URL (folder); null when this API "
                                       "does not serve the hit's bucket (IMGSEARCH_ALLOWED_BUCKETS)"},
                "size": {"type": "integer", "nullable": True}, "width": {"type": "integer", "nullable": True},
                "height": {"type": "integer", "nullable": True},
                "content_type": {"type": "string", "nullable": True}, "id": {"type": "string"},
                "inliers": {"type": "integer", "nullable": True,
                            "description": "matches agreeing on one homography (re-ranked hits only)"},
                "verified": {"type": "boolean", "nullable": True,
                             "description": "the same object, confirmed: enough inliers of a plausible view, spread "
                                            "over both images (re-ranked hits only)"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True,
                               "description": "how likely the hit shows what the query shows, calibrated (0.9: about "
                                              f"9 in 10 such hits are right); {CONFIDENT} and up: a confident match. "
                                              "Hits are ordered by it; null without re-ranking"},
                "match_polygon": {"type": "array", "nullable": True, "minItems": 4, "maxItems": 4,
                                  "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                            "items": {"type": "number"}},
                                  "description": "where the query was found in the hit: its outline, 4 [x, y] "
                                                 "corners in the hit image's pixels (0, 0 at the top left; the "
                                                 "frame of width x height), as the geometric verification mapped "
                                                 "it; may reach past the image's edges. Verified hits only, else "
                                                 "null"},
                "folder": {"type": "string", "nullable": True, "description": "the key's folder (\"\": the top)"},
                "tags": {**_LABELS, "description": "the object's S3 tags"},
                "user_metadata": {**_LABELS, "description": "the object's x-amz-meta-* metadata, names in lower "
                                                            "case"},
                "duplicate_of": _ORIGINAL}},
            "DuplicateGroups": {"type": "object", "required": ["groups", "total", "page", "page_size"], "properties": {
                "groups": {"type": "array", "items": {"type": "object", "required": ["original", "copies"],
                                                      "properties": {
                    "original": {"type": "object", "required": ["id", "bucket", "key", "url", "indexed"],
                                 "properties": {"id": {"type": "string"}, "bucket": {"type": "string"},
                                                "key": {"type": "string"}, "url": {"type": "string", "nullable": True},
                                                "indexed": {"type": "boolean", "description": "false once the "
                                                            "original was deleted: its copies stay grouped"}}},
                    "copies": {"type": "array", "items": {"type": "object", "required": ["id", "bucket", "key",
                                                                                        "score", "url"],
                                                          "properties": {
                        "id": {"type": "string"}, "bucket": {"type": "string"}, "key": {"type": "string"},
                        "score": {"type": "number"}, "url": {"type": "string", "nullable": True}}}}}}},
                "total": {"type": "integer", "description": "groups in all"},
                "page": {"type": "integer"}, "page_size": {"type": "integer"}}},
            "SearchResults": {"type": "object", "required": ["hits", "total", "page", "page_size", "took_ms"],
                              "properties": {
                                  "hits": {"type": "array", "items": _ref("schemas", "Hit")},
                                  "total": {"type": "integer", "description": "hits at or above min_score, all pages"},
                                  "page": {"type": "integer"}, "page_size": {"type": "integer"},
                                  "took_ms": {"type": "number"}}},
            "DemoHit": {"type": "object", "required": ["score", "imageName", "imageUrl"], "properties": {
                "score": {"type": "number"}, "imageName": {"type": "string"}, "imageUrl": {"type": "string"}}},
            "ImageInfo": {"type": "object", "required": ["id", "bucket", "key", "url"], "properties": {
                "id": {"type": "string"}, "bucket": {"type": "string"}, "key": {"type": "string"},
                "etag": {"type": "string", "nullable": True}, "size": {"type": "integer", "nullable": True},
                "width": {"type": "integer", "nullable": True}, "height": {"type": "integer", "nullable": True},
                "content_type": {"type": "string", "nullable": True}, "model_id": {"type": "string"},
                "indexed_at": {"type": "string"}, "url": {"type": "string"},
                "folder": {"type": "string", "nullable": True}, "tags": _LABELS, "user_metadata": _LABELS,
                "duplicate_of": _ORIGINAL}},
            "UploadTicket": {"type": "object", "required": ["url", "fields", "bucket", "key", "max_bytes",
                                                            "expires_in", "filename"], "properties": {
                "url": {"type": "string", "description": "where to POST the form (S3)"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "the form's fields, all sent before `file`: the key, the "
                                          "Content-Type, the signed policy and its signature"},
                "bucket": {"type": "string"}, "key": {"type": "string", "description": "the new object's key"},
                "max_bytes": {"type": "integer", "description": "the largest file S3 will take"},
                "expires_in": {"type": "integer", "description": "seconds the form stays valid"},
                "filename": {"type": "string", "nullable": True, "description": "the request's filename"}}},
            "Stats": {"type": "object", "required": ["documents", "model_id", "backend", "whitening",
                                                     "whitening_images"], "properties": {
                "documents": {"type": "integer"}, "model_id": {"type": "string"}, "backend": {"type": "string"},
                "whitening": {"type": "string", "description": "id of the index's PCA-whitening (the last "
                                                               "refit); none until the index holds enough images "
                                                               "to learn one"},
                "whitening_images": {"type": "integer", "description": "how many images the last refit learnt from"},
                "ingest": {"type": "object",
                           "description": "how far ingest is behind; present when the queues are configured (a "
                                          "part that cannot be read is \"unavailable\")",
                           "properties": {
                               "queue": {"oneOf": [{"type": "string", "enum": ["unavailable"]}, {
                                   "type": "object", "required": ["waiting", "in_flight", "delayed", "oldest_age_s"],
                                   "properties": {
                                       "waiting": {"type": "integer", "description": "events not yet picked up"},
                                       "in_flight": {"type": "integer",
                                                     "description": "being indexed, or waiting to be retried"},
                                       "delayed": {"type": "integer"},
                                       "oldest_age_s": {"type": "number", "nullable": True,
                                                        "description": "age of the oldest event (CloudWatch's "
                                                                       "ApproximateAgeOfOldestMessage); null where "
                                                                       "CloudWatch has no figure"}}}]},
                               "dead_letters": {"oneOf": [{"type": "integer", "description": "uploads that could not "
                                                           "be indexed, waiting in the dead-letter queue"},
                                                          {"type": "string", "enum": ["unavailable"]}]}}}}},
            "Health": {"type": "object", "required": ["ok", "down", "index"], "properties": {
                "ok": {"type": "boolean"}, "down": {"type": "array", "items": {"type": "string"}},
                "index": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "additionalProperties": True},
                "storage": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                            "additionalProperties": True}}},
        },
    },
}


def document(*, base_path: str = "/", max_page_size: int, max_image_bytes: int) -> dict:
    """OPENAPI with this deployment's base path and limits filled in."""
    doc = copy.deepcopy(OPENAPI)
    doc["servers"] = [{"url": base_path or "/"}]
    doc["components"]["parameters"]["PageSize"]["schema"]["maximum"] = max_page_size
    doc["components"]["parameters"]["Page"]["schema"]["maximum"] = max_page(max_page_size)
    doc["paths"]["/searchByImage"]["post"]["parameters"][1]["schema"]["maximum"] = max_page(max_page_size)
    doc["paths"]["/searchByImage"]["post"]["parameters"][2]["schema"]["maximum"] = max_page_size
    doc["components"]["responses"]["TooLarge"]["description"] += f" ({max_image_bytes} bytes)"
    return doc
