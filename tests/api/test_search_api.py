"""The search API's routes over real HTTP, with the real model and the seed images (happy paths).

Errors are in test_search_api_errors.py, the page in a browser in test_page_browser.py.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from helpers import emf_metrics, reencoded_copy
from imgsearch import service as holder
from imgsearch.options import MAX_PREFIX_LENGTH, max_page

HIT_FIELDS = {"score", "key", "bucket", "url", "size", "width", "height", "content_type", "id", "inliers", "verified",
              "confidence", "match_polygon", "folder", "tags", "user_metadata", "duplicate_of"}
TIMEOUT = 120


def upload(api: str, data: bytes, *, path: str = "/search", params=None, fields=None, **kwargs):
    return requests.post(api + path, params=params, data=fields, files={"file": ("query.jpg", data, "image/jpeg")},
                         timeout=TIMEOUT, **kwargs)


def hit_keys(body: dict) -> list[str]:
    return [hit["key"] for hit in body["hits"]]


def test_multipart_copy_of_each_seed_image_finds_its_original_first(api, seed_paths, seed_dir):
    for path in seed_paths:
        response = upload(api, reencoded_copy(path))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"hits", "total", "page", "page_size", "took_ms"}
        assert body["hits"][0]["key"] == path.name, (path.name, body["hits"][:2])
        top = body["hits"][0]
        assert set(top) == HIT_FIELDS
        assert top["bucket"] == str(seed_dir)
        assert top["url"] == (seed_dir / path.name).as_uri()
        assert top["score"] > body["hits"][1]["score"]
        assert body["total"] == len(seed_paths) and body["page"] == 1 and body["page_size"] == 10


@pytest.mark.parametrize("fmt, content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"),
                                               ("GIF", "image/gif"), ("BMP", "image/bmp"), ("TIFF", "image/tiff")])
def test_raw_body_in_every_accepted_format_finds_the_original(api, seed_paths, fmt, content_type):
    original = seed_paths[1]
    with Image.open(io.BytesIO(reencoded_copy(original))) as image:
        out = io.BytesIO()
        image.save(out, format=fmt)
    response = requests.post(api + "/search", data=out.getvalue(), headers={"Content-Type": content_type},
                             params={"page_size": 2}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert hit_keys(response.json())[0] == original.name


def test_base64_json_with_parameters_in_the_body(api, seed_paths):
    original = seed_paths[2]
    encoded = base64.b64encode(reencoded_copy(original)).decode()
    response = requests.post(api + "/search", json={"image": encoded, "page_size": 3, "min_score": 0},
                             timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert hit_keys(body)[0] == original.name and len(body["hits"]) == 3 and body["page_size"] == 3
    as_data_url = requests.post(api + "/search", json={"image": "data:image/jpeg;base64," + encoded}, timeout=TIMEOUT)
    assert as_data_url.status_code == 200 and hit_keys(as_data_url.json())[0] == original.name


def test_form_fields_carry_parameters_and_override_the_query_string(api, seed_paths):
    response = upload(api, reencoded_copy(seed_paths[0]), params={"page_size": 4}, fields={"page_size": "2"})
    assert response.status_code == 200, response.text
    assert response.json()["page_size"] == 2 and len(response.json()["hits"]) == 2


def test_min_score_filters_hits_and_total(api, seed_paths):
    query = reencoded_copy(seed_paths[3])
    everything = upload(api, query).json()
    scores = [hit["score"] for hit in everything["hits"]]
    assert scores == sorted(scores, reverse=True)
    threshold = (scores[0] + scores[1]) / 2
    filtered = upload(api, query, params={"min_score": threshold}).json()
    assert hit_keys(filtered) == [seed_paths[3].name] and filtered["total"] == 1
    assert scores[0] < 1.0  # a re-encoded copy is not identical, so:
    nothing = upload(api, query, params={"min_score": 1}).json()
    assert nothing["hits"] == [] and nothing["total"] == 0


def test_pages_are_disjoint_and_cover_every_hit(api, seed_paths):
    query = reencoded_copy(seed_paths[0])
    all_at_once = hit_keys(upload(api, query, params={"page_size": 10}).json())
    pages = [upload(api, query, params={"page": page, "page_size": 2}).json() for page in (1, 2, 3, 4)]
    assert [len(p["hits"]) for p in pages] == [2, 2, 1, 0]
    assert all(p["total"] == len(seed_paths) for p in pages)
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    assert sum((hit_keys(p) for p in pages), []) == all_at_once
    assert len(set(all_at_once)) == len(seed_paths)


@pytest.mark.parametrize("mode", ["exact", "knn"])
def test_both_search_modes(api, seed_paths, mode):
    response = upload(api, reencoded_copy(seed_paths[4]), params={"mode": mode})
    assert response.status_code == 200, response.text
    assert hit_keys(response.json())[0] == seed_paths[4].name


def test_rerank_confirms_the_original_and_can_be_switched_off(api, seed_paths):
    verified = upload(api, reencoded_copy(seed_paths[2]), params={"rerank": "true"}).json()["hits"]
    assert verified[0]["key"] == seed_paths[2].name and verified[0]["verified"] is True
    assert verified[0]["inliers"] >= 15 and not any(h["verified"] for h in verified[1:])
    plain = upload(api, reencoded_copy(seed_paths[2]), params={"rerank": "false"}).json()["hits"]
    assert plain[0]["key"] == seed_paths[2].name and {h["verified"] for h in plain} == {None}
    assert {h["confidence"] for h in plain} == {None}


def test_a_verified_hit_says_where_it_matched(api, seed_paths):
    """A re-encoded copy (5% cropped off each side) matches its whole original: the polygon's corners, in the
    original's pixels, lie near the image's corners, in the order of the query's box (clockwise from top left)."""
    from openapi_schema_validator import OAS30Validator

    original = seed_paths[4]  # its features reach close to every edge (an outline is their box, mapped)
    hits = upload(api, reencoded_copy(original), params={"page_size": "10"}).json()["hits"]
    top = hits[0]
    assert top["key"] == original.name and top["verified"] is True
    width, height = top["width"], top["height"]
    with Image.open(original) as image:
        assert (width, height) == image.size
    polygon = top["match_polygon"]
    assert len(polygon) == 4 and all(len(point) == 2 for point in polygon)
    for (x, y), (cx, cy) in zip(polygon, [(0, 0), (width, 0), (width, height), (0, height)]):
        assert abs(x - cx) <= 0.15 * width and abs(y - cy) <= 0.15 * height, polygon
    assert all(hit["match_polygon"] is None for hit in hits if not hit["verified"]) and len(hits) > 1
    schemas = requests.get(f"{api}/openapi.json", timeout=TIMEOUT).json()["components"]["schemas"]
    for hit in hits:  # as documented (the schema fuzzer meets no verified hit)
        OAS30Validator(schemas["Hit"]).validate(hit)
    plain = upload(api, reencoded_copy(original), params={"rerank": "false"}).json()["hits"]
    assert {hit["match_polygon"] for hit in plain} == {None}


def test_confidence_orders_the_hits_and_min_confidence_keeps_the_sure_ones(api, seed_paths):
    body = upload(api, reencoded_copy(seed_paths[3]), params={"page_size": "10"}).json()
    confidences = [h["confidence"] for h in body["hits"]]
    assert body["hits"][0]["key"] == seed_paths[3].name and confidences[0] > 0.9
    assert confidences == sorted(confidences, reverse=True) and max(confidences[1:]) < 0.5
    sure = upload(api, reencoded_copy(seed_paths[3]), params={"min_confidence": "0.5"}).json()
    assert hit_keys(sure) == [seed_paths[3].name] and sure["total"] == 1
    far = upload(api, reencoded_copy(seed_paths[3]), params={"min_confidence": "0.5", "page": "100",
                                                            "page_size": "100"}).json()
    assert far["hits"] == [] and far["total"] == 1  # only the verified head is read, whatever the page
    # Only re-ranked hits have a confidence: asking for one re-ranks, whatever rerank says.
    forced = upload(api, reencoded_copy(seed_paths[3]), params={"min_confidence": "0.5", "rerank": "false"}).json()
    assert hit_keys(forced) == [seed_paths[3].name] and forced["hits"][0]["verified"] is True


def test_prefix_limits_keys(api, seed_paths):
    prefix = seed_paths[1].name[:-4]
    response = upload(api, reencoded_copy(seed_paths[0]), params={"prefix": prefix})
    assert response.status_code == 200, response.text
    assert hit_keys(response.json()) == [p.name for p in seed_paths if p.name.startswith(prefix)]


def test_filters_on_the_buckets_labels(api, variant, labelled_index, seed_paths):
    """filter= (repeatable), a JSON array and /similar's filter keep only the images whose tags, metadata or folder
    match; a filter that is not name=value is a 400 that says how to write one."""
    from imgsearch.labels import Labels

    keys = [path.name for path in seed_paths]
    labelled = labelled_index({keys[0]: Labels.of(keys[0], {"color": "red"}, {}),
                               keys[1]: Labels.of(keys[1], {"color": "blue"}, {"Author": "ann"}),
                               keys[2]: Labels.of(keys[2], {"color": "red", "shelf": "top"}, {})})
    variant(index=labelled)
    query = reencoded_copy(seed_paths[0])

    either = upload(api, query, params=[("filter", "tag.color=red"), ("filter", "tag.color=blue")])
    assert either.status_code == 200, either.text
    assert sorted(hit_keys(either.json())) == sorted(keys[:3]) and either.json()["total"] == 3
    assert either.json()["hits"][0]["tags"] == {"color": "red"} and either.json()["hits"][0]["folder"] == ""
    both = requests.post(f"{api}/search", json={"image": base64.b64encode(query).decode(),
                                                "filter": ["tag.color=red", "tag.shelf=top"]}, timeout=TIMEOUT)
    assert hit_keys(both.json()) == [keys[2]]
    by_metadata = upload(api, query, fields={"filter": "meta.AUTHOR=ann"})
    assert hit_keys(by_metadata.json()) == [keys[1]]
    similar = requests.get(f"{api}/similar", params={"key": keys[0], "filter": "tag.color=red"}, timeout=TIMEOUT)
    assert hit_keys(similar.json()) == [keys[2]]
    assert upload(api, query, params={"filter": "folder=/"}).json()["total"] == len(keys)
    for bad in ("color=red", "tag.color", "tag.=red"):
        refused = upload(api, query, params={"filter": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert "tag.<name>" in refused.json()["message"] or "name=value" in refused.json()["message"], bad
    as_object = requests.post(f"{api}/search", json={"image": base64.b64encode(query).decode(),
                                                     "filter": {"tag.color": "red"}}, timeout=TIMEOUT)
    assert as_object.status_code == 400 and "name=value" in as_object.json()["message"]


def test_copies_are_listed_in_groups_and_collapsed(api, variant, labelled_index, seed_paths):
    """GET /duplicates groups the copies under their original; collapse=true shows one image per group, on
    /search and /similar; without copies the list is empty."""
    assert requests.get(f"{api}/duplicates", timeout=TIMEOUT).json() == {"groups": [], "total": 0, "page": 1,
                                                                       "page_size": 10}
    keys = [path.name for path in seed_paths]
    variant(index=labelled_index({}, copies={keys[1]: keys[0], keys[2]: keys[0]}))
    listed = requests.get(f"{api}/duplicates", params={"page_size": 5}, timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text
    (group,) = listed.json()["groups"]
    assert group["original"]["key"] == keys[0] and group["original"]["indexed"] and group["original"]["url"]
    assert sorted(c["key"] for c in group["copies"]) == sorted(keys[1:3]) and group["copies"][0]["score"] == 0.9
    query = reencoded_copy(seed_paths[0])
    everything = upload(api, query, params={"min_confidence": 0}).json()
    collapsed = upload(api, query, params={"min_confidence": 0, "collapse": "true"}).json()
    assert len(set(hit_keys(collapsed)) & set(keys[:3])) == 1 and collapsed["total"] == everything["total"] - 2
    assert {hit["key"]: hit["duplicate_of"] for hit in everything["hits"]}[keys[1]]["key"] == keys[0]
    similar = requests.get(f"{api}/similar", params={"key": keys[3], "collapse": "true"}, timeout=TIMEOUT).json()
    assert len(set(hit_keys(similar)) & set(keys[:3])) == 1
    assert requests.get(f"{api}/duplicates", params={"page": 0}, timeout=TIMEOUT).status_code == 400


def test_search_by_image_keeps_the_demo_contract(api, seed_paths):
    original = seed_paths[0]
    response = upload(api, reencoded_copy(original), path="/searchByImage")
    assert response.status_code == 200, response.text
    hits = response.json()
    assert isinstance(hits, list) and hits
    assert all(set(hit) == {"score", "imageName", "imageUrl"} for hit in hits)
    assert hits[0]["imageName"] == original.name and hits[0]["imageUrl"].endswith("/" + original.name)
    assert all(hit["score"] >= 0.8 for hit in hits)  # the demo's default score
    everything = upload(api, reencoded_copy(original), path="/searchByImage", params={"score": -1}).json()
    assert len(everything) == len(seed_paths)
    second = upload(api, reencoded_copy(original), path="/searchByImage",
                    params={"score": -1, "page": 2}, fields={"pageSize": "2"}).json()
    assert [h["imageName"] for h in second] == [h["imageName"] for h in everything[2:4]]


def test_similar_leaves_the_image_out(api, seed_paths):
    key = seed_paths[0].name
    by_path = requests.get(f"{api}/images/{quote(key, safe='')}/similar", timeout=TIMEOUT)
    assert by_path.status_code == 200, by_path.text
    body = by_path.json()
    assert key not in hit_keys(body)
    assert sorted(hit_keys(body)) == sorted(p.name for p in seed_paths if p.name != key)
    assert body["total"] == len(seed_paths) - 1
    by_query = requests.get(f"{api}/similar", params={"key": key, "page_size": 2}, timeout=TIMEOUT).json()
    assert hit_keys(by_query) == hit_keys(body)[:2]


def test_describe_an_indexed_image(api, seed_paths, seed_dir):
    path = seed_paths[0]
    info = requests.get(f"{api}/images/{path.name}", timeout=TIMEOUT)
    assert info.status_code == 200, info.text
    body = info.json()
    with Image.open(path) as image:
        assert (body["width"], body["height"]) == image.size
    assert body["key"] == path.name and body["bucket"] == str(seed_dir) and body["size"] == path.stat().st_size
    assert body["url"] == path.resolve().as_uri() and body["content_type"] == "image/jpeg"
    by_query = requests.get(f"{api}/image", params={"key": path.name, "bucket": str(seed_dir)}, timeout=TIMEOUT)
    assert by_query.json() == body


def test_content_streams_the_bytes_of_a_folder_image(api, seed_paths):
    path = seed_paths[1]
    for response in (requests.get(f"{api}/images/{path.name}/content", timeout=TIMEOUT),
                     requests.get(f"{api}/image/content", params={"key": path.name}, timeout=TIMEOUT)):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.content == path.read_bytes()


def test_keys_with_slashes_spaces_and_percent(api, tmp_path, search_module, seed_service, seed_paths):
    """Chalice (locally, and API Gateway REST APIs) hands path parameters over still percent-encoded and routes
    %2F inside one segment; a literal '/' splits the path and matches no route. The app decodes once."""
    from imgsearch.pipeline import ImageSearch
    from imgsearch.storage import FolderStorage

    folder = tmp_path / "bucket"
    keys = ["nested/a b/cat.jpg", "100% sure.jpg"]
    for key, source in zip(keys, seed_paths):
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(source.read_bytes())
    service = ImageSearch.open(seed_service.settings.replace(data_dir=tmp_path / "data", bucket=str(folder)),
                               embedder=seed_service.embedder)
    assert service.ingester.index_source(FolderStorage(folder)).indexed == 2
    holder.use(service)
    try:
        for key in keys:
            encoded = quote(key, safe="")
            info = requests.get(f"{api}/images/{encoded}", timeout=TIMEOUT)
            assert info.status_code == 200 and info.json()["key"] == key, info.text
            assert requests.get(f"{api}/image", params={"key": key}, timeout=TIMEOUT).json()["key"] == key
            content = requests.get(f"{api}/images/{encoded}/content", timeout=TIMEOUT)
            assert content.content == (folder / key).read_bytes()
            similar = requests.get(f"{api}/images/{encoded}/similar", timeout=TIMEOUT).json()
            assert hit_keys(similar) == [k for k in keys if k != key]
        literal = requests.get(f"{api}/images/nested/a%20b/cat.jpg", timeout=TIMEOUT)
        assert literal.status_code == 403  # no route: Chalice's (and API Gateway's) "Missing Authentication Token"
    finally:
        service.close()


def test_each_search_writes_its_metrics_for_cloudwatch(api, seed_paths, capsys, monkeypatch):
    """One EMF line per request (Lambda's log stream turns it into CloudWatch metrics): a query, its time and
    how many of its hits were verified; nothing for a request that is not a search."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()
    hits = upload(api, reencoded_copy(seed_paths[0])).json()["hits"]
    requests.get(f"{api}/stats", timeout=TIMEOUT)
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["Queries"] == [1] and 0 < metrics["QueryMs"][0] < TIMEOUT * 1000
    assert metrics["HitsVerified"] == [sum(1 for hit in hits if hit["verified"])] and hits[0]["verified"]


def test_stats(api, seed_paths):
    response = requests.get(f"{api}/stats", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"documents": len(seed_paths), "model_id": "vgg19-rmac-sq224-pcaw",
                               "backend": "embedded", "whitening": "none",  # too few images to fit one yet
                               "whitening_images": 0}  # no queue configured: no "ingest" part


def test_health_when_everything_answers(api, seed_dir):
    response = requests.get(f"{api}/health", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["down"] == []
    assert body["index"]["ok"] is True and body["storage"] == {"ok": True}  # which bucket: not for the public


def test_page_is_self_contained_html(api):
    response = requests.get(api + "/", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert 'type="file"' in page and "image/content?" in page and "x-api-key" in page
    assert "http://" not in page and "https://" not in page  # no CDN: it must work offline


def test_importing_the_app_loads_no_model(tmp_path):
    """Cold starts stay small: TensorFlow is imported when the first image is embedded, not with the app."""
    code = ("import sys; from imgsearch.local import load_function; m = load_function('search'); "
            "assert m.app.app_name == 'imgsearch-search'; "
            "print(sorted(n for n in ('tensorflow', 'keras', 'imgsearch.embedder') if n in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_get_service_builds_from_the_environment_once(api, search_module, monkeypatch, tmp_path):
    monkeypatch.setenv("IMGSEARCH_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("IMGSEARCH_BACKEND", "embedded")
    monkeypatch.setenv("IMGSEARCH_MAX_PAGE_SIZE", "3")
    monkeypatch.delenv("IMGSEARCH_API_KEY", raising=False)
    holder.reset()
    service = holder.get()
    try:
        assert holder.get() is service
        assert service.settings.data_dir == tmp_path / "env-data" and service.settings.max_page_size == 3
        assert (tmp_path / "env-data" / "index.sqlite3").is_file()  # ensure_index ran
        stats = requests.get(f"{api}/stats", timeout=TIMEOUT).json()
        assert stats["documents"] == 0  # the server now answers from the new, empty index
    finally:
        service.close()


def api_gateway_event(method: str, resource: str, path: str, *, path_params=None, query=None, headers=None,
                      body: bytes | None = None, binary: bool = False) -> dict:
    """A REST API (v1) proxy event as API Gateway sends it with the stage "api"; binary bodies come base64-encoded."""
    return {
        "resource": resource, "path": path, "httpMethod": method, "headers": headers or {},
        "multiValueQueryStringParameters": {k: [str(v)] for k, v in (query or {}).items()} or None,
        "pathParameters": path_params, "stageVariables": None,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "path": "/api" + path, "stage": "api"},
        "body": None if body is None else (base64.b64encode(body).decode() if binary else body.decode()),
        "isBase64Encoded": binary,
    }


def test_as_a_lambda_handler_behind_api_gateway(api, search_module, seed_paths):
    """The app object is the Lambda handler: base64 bodies in (multipart is a binary type), base64 images out.
    (chalice local never base64-encodes request bodies, so HTTP tests alone do not cover this path.)"""
    original = seed_paths[0]
    prepared = requests.Request("POST", "http://x/search", files={"file": ("q.jpg", reencoded_copy(original),
                                                                          "image/jpeg")}).prepare()
    event = api_gateway_event("POST", "/search", "/search", query={"page_size": 2}, body=prepared.body, binary=True,
                              headers={"Content-Type": prepared.headers["Content-Type"], "Accept": "*/*"})
    response = search_module.app(event, None)
    assert response["statusCode"] == 200, response
    assert [hit["key"] for hit in json.loads(response["body"])["hits"]][0] == original.name

    key = quote(original.name, safe="")
    event = api_gateway_event("GET", "/images/{key}/content", f"/images/{key}/content", path_params={"key": key},
                              headers={"Accept": "image/jpeg"})
    response = search_module.app(event, None)
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]) == original.read_bytes()

    event = api_gateway_event("GET", "/openapi.json", "/openapi.json")
    assert json.loads(search_module.app(event, None)["body"])["servers"] == [{"url": "/api"}]


def test_openapi_document_is_valid_and_matches_the_routes(api, search_module, seed_service):
    from openapi_spec_validator import validate

    response = requests.get(f"{api}/openapi.json", timeout=TIMEOUT)
    assert response.status_code == 200
    document = response.json()
    validate(document)
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = {(path, method) for path, methods in search_module.app.routes.items() for method in methods}
    assert documented == served
    assert document["servers"] == [{"url": "/"}]
    page_size = document["components"]["parameters"]["PageSize"]["schema"]
    assert page_size["maximum"] == seed_service.settings.max_page_size
    parameters = document["components"]["parameters"]  # the rules the server enforces are stated
    assert parameters["Prefix"]["schema"]["maxLength"] == MAX_PREFIX_LENGTH
    assert parameters["Page"]["schema"]["maximum"] == max_page(page_size["maximum"])
    for path, item in document["paths"].items():  # every route says what its errors look like
        for method, operation in item.items():
            if path not in ("/", "/health"):
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            declared = set(operation.get("requestBody", {}).get("content", {}))
            route = search_module.app.routes[path][method.upper()]
            assert declared == set(route.content_types if declared else []), (method, path)
