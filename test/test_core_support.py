"""Support numbers (core/support.py), the one place the segmenter, relabelling and coverage take them from:
eq. 15 for a frame's own retrieval and for a given fusion, scale-free, and the relative nearest distance."""
from __future__ import annotations

import math

import numpy as np
import pytest

from semla_ros.core.library import AdapterEntry, AdapterLibrary
from semla_ros.core.retrieval import retrieve
from semla_ros.core.support import Support, frame_support, relative_distance


def _library():
    """Centroids a=(0,0), b=(10,0), c=(0,10): median spacing 10."""
    points = {"a": (0.0, 0.0), "b": (10.0, 0.0), "c": (0.0, 10.0)}
    entries = [AdapterEntry(n, {}, 1.0, np.array(p, np.float32), {"navigator": "nav"}, False)
               for n, p in points.items()]
    return AdapterLibrary(None, entries)


def test_library_and_active_support_follow_eq_15_and_the_spacing():
    library = _library()
    e = np.array([2.0, 0.0])
    r = retrieve(e, library.centroids, 2, 0.1, "euclidean")
    s = frame_support(e, library, r, "euclidean", ("b", "c"), (0.25, 0.75))
    w_top = np.asarray(r.weights)
    assert s.top_adapter == "a" and s.library == pytest.approx(float(np.sum(w_top / r.distances)))
    assert s.scale_free == pytest.approx(10.0 * s.library)
    d_b, d_c = 8.0, math.hypot(2.0, 10.0)
    assert s.active == pytest.approx(0.25 / d_b + 0.75 / d_c)
    assert s.active_scale_free == pytest.approx(10.0 * s.active)
    assert not s.active_is_top
    # Centroids passed explicitly (an active fusion from before a reload) are used as given.
    moved = frame_support(e, library, r, "euclidean", ("a",), (1.0,), np.array([[4.0, 0.0]]))
    assert moved.active == pytest.approx(1.0 / 2.0) and moved.active_is_top
    # No active fusion: only the library numbers; no retrieval: nothing.
    base = frame_support(e, library, r, "euclidean")
    assert math.isnan(base.active) and math.isnan(base.active_scale_free) and base.library == s.library
    empty = type(r)(
        indices=np.zeros(0, np.int64), weights=np.zeros(0), distances=np.zeros(0), similarities=np.zeros(0))
    assert frame_support(e, library, empty, "euclidean") == Support()


def test_relative_distance_is_the_nearest_centroid_over_the_spacing():
    nearest, relative = relative_distance(np.array([13.0, 4.0]), _library())
    assert nearest == pytest.approx(5.0) and relative == pytest.approx(0.5)
    single = AdapterLibrary(None, [AdapterEntry("a", {}, 1.0, np.zeros(2, np.float32), {"navigator": "nav"}, False)])
    nearest, relative = relative_distance(np.array([3.0, 4.0]), single)
    assert nearest == pytest.approx(5.0) and math.isnan(relative)
