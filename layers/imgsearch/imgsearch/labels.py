"""What the bucket says about an object besides its bytes, and searches filtered by it.

An object's Labels are its folder (the key up to its last "/"), its S3 tags and its user metadata
(x-amz-meta-*). Documents keep them as keywords; a search's filters (folder=cats/, tag.color=red,
meta.author=ann) keep only the documents that carry them, on every backend, before ranking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .errors import InvalidRequestError

log = logging.getLogger(__name__)

# S3 allows 10 tags (128-character names, 256-character values) and 2 KB of user metadata; MinIO and local
# folders may say more. What is kept is bounded here, whatever the store allowed.
MAX_LABELS = 50  # tags, and metadata entries, kept per object
MAX_NAME = 128
MAX_VALUE = 2048
MAX_FILTERS = 20  # name=value terms in one search, all names together
# filter names users write -> the document field that holds them
FILTER_FIELDS = {"tag.": "tags", "meta.": "user_metadata"}
FOLDER = "folder"


def folder_of(key: str) -> str:
    """The key's folder with its trailing "/" ("cats/a.jpg" -> "cats/"); "" at the top of the bucket."""
    head, slash, _ = key.rpartition("/")
    return head + slash


def bounded(pairs: Mapping[str, Any] | None, *, lower_names: bool = False) -> dict[str, str]:
    """At most MAX_LABELS string pairs of sane length; the rest is left out (and logged), never an error: an
    object is still indexed when its labels are odd."""
    kept: dict[str, str] = {}
    for name, value in (pairs or {}).items():
        name, value = str(name), str(value)
        if len(kept) >= MAX_LABELS or not name or len(name) > MAX_NAME or len(value) > MAX_VALUE:
            log.warning("label %r left out: at most %d labels, names of 1 to %d and values of at most %d "
                        "characters", name[:40], MAX_LABELS, MAX_NAME, MAX_VALUE)
            continue
        kept[name.lower() if lower_names else name] = value
    return kept


@dataclass(frozen=True)
class Labels:
    folder: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    user_metadata: dict[str, str] = field(default_factory=dict)  # names in lower case, as S3 returns them

    @classmethod
    def of(cls, key: str, tags: Mapping[str, Any] | None, user_metadata: Mapping[str, Any] | None) -> Labels:
        return cls(folder_of(key), bounded(tags), bounded(user_metadata, lower_names=True))


@dataclass(frozen=True)
class Filter:
    """Documents whose field (folder, or the tag or metadata `name`) equals any of `values`."""

    field: str  # "folder", "tags" or "user_metadata": the document field
    name: str | None  # the tag's or metadata's name; None for folder
    values: tuple[str, ...]

    @property
    def path(self) -> str:
        """The field's dotted path (Elasticsearch: a flattened field's key is a sub-field)."""
        return self.field if self.name is None else f"{self.field}.{self.name}"


def parse_filters(spec: Any) -> tuple[Filter, ...]:
    """Filters from what an adapter received: a mapping {"tag.color": "red" or ["red", "blue"], "folder": "cats/"},
    one "name=value" text, or a list of such texts (the API's repeated filter, the CLI's repeated --filter; a
    name's own "=" cannot be written so: use the mapping). Names are folder, tag.<name> and meta.<name>; a name
    given twice accepts either value. InvalidRequestError otherwise."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        spec = [spec]
    terms: dict[str, list[str]] = {}
    for name, values in _pairs(spec):
        terms.setdefault(name, [])
        terms[name] += [values] if isinstance(values, str) else list(values)
    if sum(len(values) for values in terms.values()) > MAX_FILTERS:
        raise InvalidRequestError(f"filter: at most {MAX_FILTERS} name=value terms in all")
    return tuple(_filter(name, values) for name, values in terms.items())


def _pairs(spec: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(spec, Mapping):
        for name, values in spec.items():
            if not (isinstance(values, str) or (isinstance(values, list) and values
                                                 and all(isinstance(v, str) for v in values))):
                raise InvalidRequestError(f"filter {str(name)[:40]!r}: a value is a string or a list of strings")
            yield str(name), values
    elif isinstance(spec, (list, tuple)):
        for term in spec:
            name, equals, value = term.partition("=") if isinstance(term, str) else ("", "", "")
            if not equals:
                raise InvalidRequestError(f"filter {str(term)[:40]!r}: write name=value, e.g. tag.color=red")
            yield name, value
    else:
        raise InvalidRequestError("filter: an object of name: value, or name=value")


def _filter(name: str, values: list[str]) -> Filter:
    if any(len(v) > MAX_VALUE for v in values):
        raise InvalidRequestError(f"filter {name[:40]!r}: values of at most {MAX_VALUE} characters")
    if name == FOLDER:
        return Filter(FOLDER, None, tuple(dict.fromkeys(_folder(v) for v in values)))
    for prefix, field_name in FILTER_FIELDS.items():
        label = name[len(prefix):]
        if name.startswith(prefix) and 0 < len(label) <= MAX_NAME and min(label) >= " ":
            if field_name == "user_metadata":
                label = label.lower()  # S3 keeps metadata names in lower case
            return Filter(field_name, label, tuple(dict.fromkeys(values)))
    raise InvalidRequestError(f"filter {name[:40]!r}: filter on folder, tag.<name> or meta.<name> (names of 1 "
                              f"to {MAX_NAME} characters, no control characters)")


def _folder(value: str) -> str:
    """"cats", "/cats/" and "cats/" all name the folder "cats/"; "/" or "" the top of the bucket."""
    value = value.strip().strip("/")
    return value + "/" if value else ""
