"""The contract every index backend must pass, run unchanged against the embedded index and a real
Elasticsearch. Vectors are synthetic (shaped like ours: non-negative, unit length, 512-d); no model needed."""

from __future__ import annotations

import dataclasses
import uuid
import warnings

import numpy as np
import pytest

from imgsearch.errors import IncompatibleIndexError, InvalidRequestError
from imgsearch.index import ImageDocument, SearchRequest, doc_id
from imgsearch.index.elasticsearch import ElasticsearchIndex
from imgsearch.index.embedded import EmbeddedIndex
from imgsearch.whitening import DescriptorSet, WhiteningStats

from servers import elasticsearch_url

MODEL = "test-model"


def unit_vectors(n: int, seed: int = 0, dim: int = 512) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = np.abs(rng.normal(size=(n, dim))).astype(np.float32) ** 3  # (n, 512) sparse-ish, like ReLU maxima
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def documents(vectors, bucket="bucket", prefix="img"):
    return [ImageDocument(bucket=bucket, key=f"{prefix}/{i:04d}.jpg", vector=v, model_id=MODEL, etag=f"e{i}",
                          size=1000 + i, width=640, height=480, content_type="image/jpeg")
            for i, v in enumerate(vectors)]


def es_index(**options) -> ElasticsearchIndex:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(elasticsearch_url(), request_timeout=30)
    return ElasticsearchIndex(client, index=f"test-{uuid.uuid4().hex[:12]}", model_id=MODEL, **options)


@pytest.fixture(params=["embedded", "elasticsearch", "elasticsearch-flat"])
def backend(request, tmp_path):
    if request.param == "embedded":
        index = EmbeddedIndex(tmp_path, model_id=MODEL)
    else:
        index = es_index(vector_index="flat" if request.param.endswith("flat") else "hnsw")
    try:
        index.ensure_index()
        yield index
    finally:  # delete_index drops <index>_whitening too, even when ensure_index got half way
        index.delete_index()
        index.close()


class ExactRanAsKnn(UserWarning):
    """A contract test asked for exact search and ran kNN instead (see exact())."""


def runs_exact(index) -> bool:
    """Can this index search exactly? Not an hnsw Elasticsearch index on a server without painless (script_score
    needs it; a flat index is brute force kNN, exact without it)."""
    return not (isinstance(index, ElasticsearchIndex) and index.vector_index == "hnsw" and not index.has_painless())


def exact(index):
    """"exact" where the index can; "knn" where it cannot (same results at this size), with an ExactRanAsKnn
    warning in the run's summary, so a run never claims exact search it did not do
    (test_exact_is_exact_or_the_suite_says_it_ran_knn checks both halves)."""
    if runs_exact(index):
        return "exact"
    warnings.warn(ExactRanAsKnn(f"{index.name} index {index.index} (hnsw) on a server without painless: "
                                "contract tests run mode=knn instead of exact"), stacklevel=2)
    return "knn"


def test_upsert_get_count_and_ids_are_derived_from_bucket_and_key(backend):
    docs = documents(unit_vectors(3))
    backend.upsert(docs)
    backend.refresh()
    assert backend.count() == 3
    got = backend.get(doc_id("bucket", "img/0001.jpg"))
    assert got.key == "img/0001.jpg" and got.bucket == "bucket" and got.etag == "e1" and got.width == 640
    np.testing.assert_allclose(got.vector, docs[1].vector, atol=1e-6)
    assert backend.get(doc_id("other-bucket", "img/0001.jpg")) is None


def test_get_without_vector_reads_metadata_only(backend):
    doc = dataclasses.replace(documents(unit_vectors(1, seed=11))[0], local_features=b"lf", descriptors=b"ds")
    backend.upsert([doc])
    backend.refresh()
    light = backend.get(doc.doc_id, with_vector=False)
    assert light.vector.size == 0 and light.local_features is None and light.descriptors is None
    assert light.metadata() == backend.get(doc.doc_id).metadata() == doc.metadata()


def test_delete_index_drops_documents_and_whitening(backend):
    backend.upsert(documents(unit_vectors(2, seed=12)))
    stats = WhiteningStats()
    stats.add(unit_vectors(600, seed=13))
    backend.whitenings.save(stats.fit())
    backend.delete_index()
    backend.ensure_index()
    backend.refresh()
    assert backend.count() == 0 and backend.whitenings.info() is None


def test_reupsert_replaces_instead_of_duplicating(backend):
    vectors = unit_vectors(2, seed=1)
    backend.upsert(documents(vectors[:1]))
    replaced = ImageDocument(bucket="bucket", key="img/0000.jpg", vector=vectors[1], model_id=MODEL, etag="new")
    backend.upsert([replaced])
    backend.refresh()
    assert backend.count() == 1
    assert backend.get(replaced.doc_id).etag == "new"
    top = backend.search(SearchRequest(vector=vectors[1], mode=exact(backend))).hits[0]
    assert top.score == pytest.approx(1.0, abs=1e-5)


def test_delete_removes_only_the_named_documents(backend):
    docs = documents(unit_vectors(4, seed=2))
    backend.upsert(docs)
    backend.refresh()
    assert backend.delete([docs[0].doc_id, "no-such-id"]) == 1
    backend.refresh()
    assert backend.count() == 3
    assert backend.get(docs[0].doc_id) is None
    assert backend.get(docs[1].doc_id) is not None


def test_search_ranks_by_cosine_and_reports_cosine_scores(backend):
    vectors = unit_vectors(50, seed=3)
    backend.upsert(documents(vectors))
    backend.refresh()
    query = unit_vectors(1, seed=99)[0]
    expected = np.argsort(-(vectors @ query))[:5]
    page = backend.search(SearchRequest(vector=query, page_size=5, mode=exact(backend)))
    assert [h.key for h in page.hits] == [f"img/{i:04d}.jpg" for i in expected]
    np.testing.assert_allclose([h.score for h in page.hits], (vectors @ query)[expected], atol=1e-5)
    assert page.hits[0].document.vector.size in (0, 512)  # vectors may be left out of hits


def test_min_score_and_paging_from_is_page_minus_one_times_size(backend):
    vectors = unit_vectors(30, seed=4)
    backend.upsert(documents(vectors))
    backend.refresh()
    query = vectors[0]
    scores = np.sort(vectors @ query)[::-1]
    threshold = float(scores[12])  # 13 documents at or above it
    pages = [backend.search(SearchRequest(vector=query, min_score=threshold - 1e-6, page=p, page_size=5,
                                          mode=exact(backend))) for p in (1, 2, 3, 4)]
    keys = [h.key for p in pages for h in p.hits]
    assert [len(p.hits) for p in pages] == [5, 5, 3, 0]
    assert len(set(keys)) == 13
    assert all(p.total == 13 for p in pages)
    assert all(h.score >= threshold - 1e-5 for p in pages for h in p.hits)


def test_key_prefix_and_exclusion_filter_results(backend):
    vectors = unit_vectors(6, seed=5)
    backend.upsert(documents(vectors[:3], prefix="cats") + documents(vectors[3:], prefix="dogs"))
    backend.refresh()
    page = backend.search(SearchRequest(vector=vectors[0], key_prefix="dogs/", mode=exact(backend)))
    assert {h.key.split("/")[0] for h in page.hits} == {"dogs"}
    first = doc_id("bucket", "cats/0000.jpg")
    page = backend.search(SearchRequest(vector=vectors[0], exclude_ids=(first,), mode=exact(backend)))
    assert first not in {h.document.doc_id for h in page.hits} and len(page.hits) == 5


def test_entries_list_ids_keys_and_etags_per_bucket(backend):
    backend.upsert(documents(unit_vectors(2, seed=6), bucket="a") + documents(unit_vectors(1, seed=7), bucket="b"))
    backend.refresh()
    assert sorted(e.key for e in backend.entries(bucket="a")) == ["img/0000.jpg", "img/0001.jpg"]
    assert {(e.bucket, e.etag) for e in backend.entries()} == {("a", "e0"), ("a", "e1"), ("b", "e0")}


def test_local_features_round_trip(backend):
    doc = ImageDocument(bucket="b", key="k.jpg", vector=unit_vectors(1)[0], model_id=MODEL,
                        local_features=bytes(range(256)) * 4)
    backend.upsert([doc])
    backend.refresh()
    assert backend.get(doc.doc_id).local_features == doc.local_features
    page = backend.search(SearchRequest(vector=doc.vector, with_local_features=True, mode=exact(backend)))
    assert page.hits[0].document.local_features == doc.local_features


def test_refuses_vectors_of_another_size_or_model(backend):
    with pytest.raises(IncompatibleIndexError):
        backend.upsert([ImageDocument(bucket="b", key="k", vector=np.ones(128, np.float32), model_id=MODEL)])
    with pytest.raises(IncompatibleIndexError):
        backend.upsert([ImageDocument(bucket="b", key="k", vector=unit_vectors(1)[0], model_id="other")])


def test_reopening_with_another_model_is_refused(backend, tmp_path):
    backend.ensure_index()  # idempotent for the same model
    if isinstance(backend, EmbeddedIndex):
        other = EmbeddedIndex(tmp_path, model_id="another-model")
    else:
        other = ElasticsearchIndex(backend.client, index=backend.index, model_id="another-model")
    with pytest.raises(IncompatibleIndexError, match="another-model"):
        other.ensure_index()


def test_exact_is_exact_or_the_suite_says_it_ran_knn(backend):
    vectors = unit_vectors(30, seed=21)
    backend.upsert(documents(vectors))
    backend.refresh()
    query = unit_vectors(1, seed=22)[0]
    if runs_exact(backend):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ExactRanAsKnn)
            assert exact(backend) == "exact"
        page = backend.search(SearchRequest(vector=query, page_size=30, mode="exact"))
        brute_force = np.argsort(-(vectors @ query), kind="stable")
        assert [hit.key for hit in page.hits] == [f"img/{i:04d}.jpg" for i in brute_force]
    else:  # the fallback is announced, and exact itself is refused rather than quietly approximated
        with pytest.warns(ExactRanAsKnn, match="without painless"):
            assert exact(backend) == "knn"
        with pytest.raises(Exception, match="painless"):
            backend.search(SearchRequest(vector=query, mode="exact"))


def test_bad_requests_are_invalid_request_errors():
    with pytest.raises(InvalidRequestError):
        SearchRequest(vector=np.zeros(512), page=0)
    with pytest.raises(InvalidRequestError):
        SearchRequest(vector=np.zeros(512), min_score=1.5)
    with pytest.raises(InvalidRequestError):
        SearchRequest(vector=np.zeros(512), mode="fuzzy")


def test_several_query_vectors_score_each_document_by_its_best(backend):
    vectors = unit_vectors(40, seed=8)
    backend.upsert(documents(vectors))
    backend.refresh()
    queries = unit_vectors(6, seed=9)  # (6, 512), like an image and its regions
    best = (vectors @ queries.T).max(axis=1)  # (40,)
    expected = np.argsort(-best)
    first = backend.search(SearchRequest(vector=queries, page_size=5, mode=exact(backend)))
    second = backend.search(SearchRequest(vector=queries, page=2, page_size=5, mode=exact(backend)))
    assert [h.key for h in first.hits + second.hits] == [f"img/{i:04d}.jpg" for i in expected[:10]]
    np.testing.assert_allclose([h.score for h in first.hits], best[expected[:5]], atol=1e-5)
    one = backend.search(SearchRequest(vector=queries[:1], page_size=3, mode=exact(backend)))  # (1, 512) works too
    assert [h.key for h in one.hits] == [f"img/{i:04d}.jpg" for i in np.argsort(-(vectors @ queries[0]))[:3]]
    threshold = float(np.sort(best)[-8])
    strict = backend.search(SearchRequest(vector=queries, min_score=threshold - 1e-6, page_size=20,
                                          mode=exact(backend)))
    assert len(strict.hits) == strict.total == 8


def test_the_whitening_is_stored_with_the_index_and_replaced_by_a_refit(backend):
    store = backend.whitenings
    assert store.info() is None and store.load() is None
    stats = WhiteningStats()
    stats.add(unit_vectors(600, seed=3))
    first = stats.fit()
    store.save(first)
    assert store.info() == (first.id, 1)
    loaded = store.load()
    assert loaded.id == first.id and np.array_equal(loaded.projection, first.projection)
    assert np.array_equal(loaded.mean, first.mean)
    stats.add(unit_vectors(50, seed=4))
    second = stats.fit()
    store.save(second)
    assert second.id != first.id and store.info() == (second.id, 2)


def test_stale_vectors_are_listed_and_replaced(backend):
    vectors = unit_vectors(4, seed=7)
    docs = [dataclasses.replace(doc, descriptors=DescriptorSet(raw=v, regions=v[None]).to_bytes(),
                                whitening="old" if i < 3 else "new")
            for i, (doc, v) in enumerate(zip(documents(vectors), vectors))]
    docs.append(documents(unit_vectors(1, seed=8), prefix="plain")[0])  # no descriptors: never listed
    backend.upsert(docs)
    backend.refresh()
    assert sorted(i for i, _ in backend.descriptor_sets()) == sorted(d.doc_id for d in docs[:4])
    stale = dict(backend.descriptor_sets(stale_for="new"))
    assert sorted(stale) == sorted(d.doc_id for d in docs[:3]) and backend.count(stale_for="new") == 3
    assert np.allclose(DescriptorSet.from_bytes(stale[docs[0].doc_id]).raw, vectors[0], atol=1e-3)

    before = backend.search(SearchRequest(vector=vectors[3], page_size=2, mode=exact(backend)))  # (caches, if any)
    assert before.hits[0].document.doc_id == docs[3].doc_id and before.hits[1].score < 0.99
    backend.set_vectors([(docs[0].doc_id, vectors[3], "new"), ("deleted-meanwhile", vectors[1], "new")])
    backend.refresh()
    assert docs[0].doc_id not in dict(backend.descriptor_sets(stale_for="new")) and backend.count(stale_for="new") == 2
    updated = backend.get(docs[0].doc_id)
    assert updated.whitening == "new" and np.allclose(updated.vector, vectors[3], atol=1e-6)
    assert updated.key == docs[0].key and updated.etag == docs[0].etag  # the rest of the document is untouched
    page = backend.search(SearchRequest(vector=vectors[3], page_size=2, mode=exact(backend)))
    assert {h.document.doc_id for h in page.hits} == {docs[0].doc_id, docs[3].doc_id}
    assert page.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert backend.count() == 5


# -- labels: the bucket's folder, tags and user metadata, to filter on ------------------------------------------
def labelled_documents(vectors):
    """cats/0 red, cats/1 blue (author ann), cats/kittens/2 red, top-level 3 with no tags."""
    labels = [("cats/", {"color": "red"}, {}), ("cats/", {"color": "blue"}, {"author": "ann"}),
              ("cats/kittens/", {"color": "red", "size": "s"}, {"author": "bob"}), ("", {}, {})]
    return [dataclasses.replace(doc, key=f"{folder}{i}.jpg", folder=folder, tags=tags, user_metadata=meta)
            for i, (doc, (folder, tags, meta)) in enumerate(zip(documents(vectors), labels))]


@pytest.mark.parametrize("rows", [1, 5])  # one query vector, or an image and its regions (ES: the best-of path)
def test_label_filters_keep_only_the_documents_that_carry_them(backend, rows):
    from imgsearch.labels import parse_filters

    vectors = unit_vectors(4, seed=11)
    backend.upsert(labelled_documents(vectors))
    backend.refresh()
    query = vectors[0] if rows == 1 else np.vstack([vectors[0], unit_vectors(rows - 1, seed=12)])

    def keys(*terms, mode=exact(backend)):
        page = backend.search(SearchRequest(vector=query, mode=mode, filters=parse_filters(list(terms))))
        assert page.total == len(page.hits)
        return sorted(hit.key for hit in page.hits)

    assert keys("folder=cats") == ["cats/0.jpg", "cats/1.jpg"]  # its own folder, not the subfolder
    assert keys("folder=/") == ["3.jpg"]
    assert keys("tag.color=red") == ["cats/0.jpg", "cats/kittens/2.jpg"]
    assert keys("tag.color=red", "tag.color=blue") == ["cats/0.jpg", "cats/1.jpg", "cats/kittens/2.jpg"]
    assert keys("tag.color=red", "meta.AUTHOR=bob") == ["cats/kittens/2.jpg"]  # every name must match
    assert keys("tag.color=red", "folder=cats/", mode="knn") == ["cats/0.jpg"]
    assert keys("tag.colour=red") == [] and keys("meta.author=red") == []  # a name or value nobody has
    hit = backend.search(SearchRequest(vector=query, mode=exact(backend),
                                       filters=parse_filters(["tag.size=s"]))).hits[0].document
    assert (hit.folder, hit.tags, hit.user_metadata) == ("cats/kittens/", {"color": "red", "size": "s"},
                                                         {"author": "bob"})


def test_set_labels_replaces_labels_and_keeps_the_rest(backend):
    from imgsearch.labels import Labels, parse_filters

    docs = labelled_documents(unit_vectors(4, seed=13))
    backend.upsert(docs)
    # docs[1] had color=blue and author=ann: both go, nothing of the old labels is merged in
    backend.set_labels([(docs[1].doc_id, Labels("cats/", {"size": "l"}, {})), ("no-such-document", Labels())])
    backend.refresh()
    changed = backend.get(docs[1].doc_id)
    assert (changed.folder, changed.tags, changed.user_metadata) == ("cats/", {"size": "l"}, {})
    assert np.allclose(changed.vector, docs[1].vector) and changed.etag == docs[1].etag
    page = backend.search(SearchRequest(vector=docs[1].vector, mode=exact(backend),
                                        filters=parse_filters(["tag.size=l"])))
    assert [hit.key for hit in page.hits] == [docs[1].key]
    assert backend.search(SearchRequest(vector=docs[1].vector, mode=exact(backend),
                                        filters=parse_filters(["meta.author=ann"]))).total == 0
    assert backend.count() == 4


def test_an_index_made_before_labels_gains_their_fields(backend):
    """An index created without the label fields (an older version) is extended by ensure_index: its documents
    are kept, listed as unlabelled, and new documents carry labels."""
    from imgsearch.index.document import LABEL_FIELDS

    old = documents(unit_vectors(2, seed=14))
    if isinstance(backend, EmbeddedIndex):
        db = backend._conn()
        for name in LABEL_FIELDS:
            db.execute(f"ALTER TABLE documents DROP COLUMN {name}")
    else:
        from imgsearch.index.document import es_mapping

        backend.delete_index()
        mapping = es_mapping(dim=512, model_id=MODEL, vector_index=backend.vector_index)
        for name in LABEL_FIELDS:
            del mapping["properties"][name]
        backend.client.indices.create(index=backend.index, mappings=mapping)
    if isinstance(backend, EmbeddedIndex):
        rows = [(doc.doc_id, doc.bucket, doc.key, doc.vector.tobytes(), MODEL, doc.etag, doc.indexed_at)
                for doc in old]
        db.executemany("INSERT INTO documents (doc_id, bucket, key, vector, model_id, etag, indexed_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    else:
        from imgsearch.index.es_client import to_source

        for doc in old:
            source = {k: v for k, v in to_source(doc).items() if k not in LABEL_FIELDS}
            backend.client.index(index=backend.index, id=doc.doc_id, document=source)
    backend.ensure_index()
    new = labelled_documents(unit_vectors(4, seed=15))[:1]
    backend.upsert(new)
    backend.refresh()
    assert backend.count() == 3
    assert {e.key: e.labelled for e in backend.entries()} == {old[0].key: False, old[1].key: False, new[0].key: True}
    assert backend.get(new[0].doc_id).tags == {"color": "red"} and backend.get(old[0].doc_id).tags is None


def test_copies_lists_the_documents_that_name_an_original(backend):
    docs = documents(unit_vectors(3, seed=16))
    original = {"id": docs[0].doc_id, "bucket": docs[0].bucket, "key": docs[0].key, "score": 0.97}
    backend.upsert([docs[0], dataclasses.replace(docs[1], duplicate_of=original), docs[2]])
    backend.refresh()
    copies = list(backend.copies())
    assert [(c.key, c.duplicate_of) for c in copies] == [(docs[1].key, original)]
    assert copies[0].vector.size == 0 and copies[0].local_features is None  # metadata only
    hit = backend.search(SearchRequest(vector=docs[1].vector, mode=exact(backend))).hits[0]
    assert hit.document.duplicate_of == original
