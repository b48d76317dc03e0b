"""The corpus through the decoder alone (no model, no server): each case is what corpus.py says it is."""

from __future__ import annotations

import re

import pytest

from badinput import corpus
from imgsearch import errors
from imgsearch.config import Settings
from imgsearch.images import decode_image

LIMITS = {"max_bytes": Settings().max_image_bytes, "max_pixels": Settings().max_pixels, "draft_size": 224}


def test_the_limits_the_corpus_aims_at_are_the_defaults():
    from PIL import Image

    assert Settings().max_pixels == corpus.PROJECT_MAX_PIXELS
    assert Image.MAX_IMAGE_PIXELS == corpus.PILLOW_MAX_PIXELS  # so the bomb case trips our check, not Pillow's


@pytest.mark.parametrize("case", corpus.cases(), ids=lambda c: c.name)
def test_each_case_decodes_or_fails_as_documented(case):
    if case.outcome == corpus.INDEXED:
        decoded = decode_image(case.data, **LIMITS)
        assert decoded.image.mode == "RGB"
        assert (decoded.content_type, decoded.image.size) == (case.content_type, case.size)
        return
    with pytest.raises(getattr(errors, case.error)) as raised:
        decode_image(case.data, **LIMITS)
    assert type(raised.value).__name__ == case.error
    assert re.search(case.reason, str(raised.value)), str(raised.value)


def test_the_bomb_is_refused_by_the_project_check_before_pillow_decodes_anything():
    bomb = next(c for c in corpus.cases() if c.name == "decompression_bomb")
    assert len(bomb.data) < 20_000  # a few KB on the wire ...
    with pytest.raises(errors.ImageTooLargeError, match=r"8000x8000 = 64000000 pixels; the limit is 50000000"):
        decode_image(bomb.data, **LIMITS)  # ... refused by our message (Pillow's would say "decompression bomb")


def test_generating_twice_gives_the_same_bytes():
    assert [c.data for c in corpus.cases()] == [c.data for c in corpus.cases()]
