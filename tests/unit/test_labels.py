"""Labels (folder, tags, user metadata) and the filters written on them: parsing, normalising and the limits."""

from __future__ import annotations

import pytest

from imgsearch.errors import InvalidRequestError
from imgsearch.labels import MAX_FILTERS, MAX_LABELS, MAX_VALUE, Filter, Labels, folder_of, parse_filters
from imgsearch.options import SearchOptions


@pytest.mark.parametrize("key, folder", [("a.jpg", ""), ("cats/a.jpg", "cats/"), ("a/b/c.png", "a/b/"),
                                         ("cats/", "cats/")])
def test_the_folder_is_the_key_up_to_its_last_slash(key, folder):
    assert folder_of(key) == folder


def test_labels_keep_sane_pairs_and_lower_case_metadata_names():
    labels = Labels.of("x/y.jpg", {"Color": "Red", "": "nameless", "long": "v" * (MAX_VALUE + 1)}, {"Author": "Ann"})
    assert labels == Labels("x/", {"Color": "Red"}, {"author": "Ann"})
    many = Labels.of("k", {f"t{i}": "v" for i in range(MAX_LABELS + 5)}, None)
    assert len(many.tags) == MAX_LABELS and many.user_metadata == {}


def test_filters_from_texts_and_from_a_mapping_mean_the_same():
    texts = parse_filters(["tag.color=red", "tag.color=blue", "folder=/cats", "meta.Author=a=b"])
    assert texts == (Filter("tags", "color", ("red", "blue")), Filter("folder", None, ("cats/",)),
                     Filter("user_metadata", "author", ("a=b",)))  # the first "=" ends the name
    assert parse_filters({"tag.color": ["red", "blue"], "folder": "cats", "meta.author": "a=b"}) == texts
    assert parse_filters("folder=") == (Filter("folder", None, ("",)),)  # the top of the bucket
    assert parse_filters(None) == ()
    assert [f.path for f in texts] == ["tags.color", "folder", "user_metadata.author"]


@pytest.mark.parametrize("spec", ["color=red", "tag.color", "tag.=red", "meta.=x", "tag.a\x00b=x", "folder",
                                  ["tag.a=1"] * (MAX_FILTERS + 1), {"tag.a": 5}, {"tag.a": []}, 7,
                                  [f"tag.t{i}=v" for i in range(MAX_FILTERS + 1)], "tag.a=" + "v" * (MAX_VALUE + 1)])
def test_a_filter_that_is_not_name_value_is_refused_with_the_rule(spec):
    with pytest.raises(InvalidRequestError, match="filter"):
        parse_filters(spec)


def test_search_options_hold_the_filter_limit_whoever_builds_them():
    with pytest.raises(InvalidRequestError, match="filter"):
        SearchOptions(filters=(Filter("tags", "a", tuple(str(i) for i in range(MAX_FILTERS + 1))),))
    with pytest.raises(InvalidRequestError, match="filter"):
        SearchOptions(filters=(Filter("tags", "a", ()),))


def test_an_object_whose_tags_may_not_be_read_is_indexed_without_them(caplog):
    """s3:GetObjectTagging not granted (403): the image still gets its folder and metadata, and the log says why
    its tags are missing; any other refusal is an error."""
    from botocore.exceptions import ClientError

    from imgsearch.ingest import read_labels
    from imgsearch.storage import S3Storage, StoredObject

    class Refusing:
        status = 403

        def get_object_tagging(self, **_):
            raise ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": self.status}},
                              "GetObjectTagging")

    client = Refusing()
    storage = S3Storage("images", client=client)
    found = StoredObject("images", "covers/a.jpg", 10, "e", user_metadata={"author": "ann"})
    assert read_labels(storage, found) == Labels("covers/", {}, {"author": "ann"})
    assert "cannot read the tags" in caplog.text
    client.status = 400
    with pytest.raises(Exception, match="refused"):
        storage.tags("covers/a.jpg")
