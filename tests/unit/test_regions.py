"""R-MAC regions and their pooling, on hand-made feature maps (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from imgsearch.embedder import region_boxes, region_maxima


@pytest.mark.parametrize("h, w, levels", [(14, 14, 3), (15, 20, 3), (28, 21, 5), (40, 30, 5), (2, 3, 5)])
def test_regions_are_squares_inside_the_map_starting_with_the_whole(h, w, levels):
    boxes = region_boxes(h, w, levels)
    assert boxes[0] == (0, 0, h, w) and len(boxes) == len(set(boxes))
    for y0, x0, y1, x1 in boxes[1:]:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w and y1 - y0 == x1 - x0


def test_region_counts_of_the_recipe():
    assert len(region_boxes(14, 14, 3)) == 14  # the 224x224 document view: 1 + 4 + 9 (level 1 is the whole)
    assert len(region_boxes(28, 21, 5)) > 50  # a 448-px query view of a portrait photo


def test_region_maxima_pool_each_region_and_skip_blank_ones():
    feature_map = np.zeros((14, 14, 512), np.float32)
    feature_map[0, 0, 7] = 2.0  # one activation in the top-left corner
    maxima = region_maxima(feature_map, 3)
    assert np.allclose(maxima[:, 7], 1.0)  # every region that contains it: unit vector along channel 7
    assert len(maxima) < len(region_boxes(14, 14, 3))  # regions that see nothing are left out
