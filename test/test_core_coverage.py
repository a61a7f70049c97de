"""Library coverage: a sustained distance beyond what the library's spacing explains is a gap; uncovered
frames are captured at a bounded rate into a bounded folder, ready to label."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from semla_ros.core.capture import read_capture
from semla_ros.core.coverage import COVERED, GAP, GAP_SUSPECTED, CoverageMonitor, CoverageSettings
from semla_ros.core.library import AdapterEntry, AdapterLibrary
from semla_ros.core.retrieval import retrieve
from semla_ros.core.settings import SegmenterSettings
from semla_ros.evaluation.dataset import open_domain

RETRIEVAL = SegmenterSettings(top_k=1)


def _library():
    """Centroids a=(0,0), b=(10,0), c=(0,10): median spacing 10."""
    points = {"a": (0.0, 0.0), "b": (10.0, 0.0), "c": (0.0, 10.0)}
    entries = [AdapterEntry(n, {}, 1.0, np.array(p, np.float32), {"navigator": "nav"}, False)
               for n, p in points.items()]
    library = AdapterLibrary(None, entries)
    assert library.median_inter_centroid_distance == pytest.approx(10.0)
    return library


def test_status_follows_the_uncovered_share_of_the_window():
    library, monitor = _library(), CoverageMonitor(CoverageSettings(window=10, suspect_fraction=0.5, gap_fraction=0.8))
    near, far = np.array([1.0, 0.0]), np.array([30.0, 31.0])
    for _ in range(10):
        r = monitor.observe(near, library, RETRIEVAL)
    assert (r.status, r.uncovered, r.relative_distance) == (COVERED, False, pytest.approx(0.1))
    assert r.nearest_adapters == ("a",) and r.scale_free_support == pytest.approx(10.0)
    statuses = [monitor.observe(far, library, RETRIEVAL).status for _ in range(10)]
    assert statuses == [COVERED] * 4 + [GAP_SUSPECTED] * 3 + [GAP] * 3   # 5/10 suspected, 8/10 a gap
    r = monitor.observe(far, library, RETRIEVAL)
    assert r.uncovered and r.nearest_distance == pytest.approx(math.hypot(30, 21))
    assert r.relative_distance == pytest.approx(math.hypot(30, 21) / 10)
    problem, text = monitor.describe(r)[-1]
    assert problem and "library gap: 100% of the last 10 embedded frames" in text and "nearest c" in text
    assert [monitor.observe(near, library, RETRIEVAL).status for _ in range(6)][-1] == COVERED


def test_a_gap_needs_a_full_window_and_low_support_can_count_too():
    library = _library()
    monitor = CoverageMonitor(CoverageSettings(window=5, suspect_fraction=0.2, gap_fraction=0.6))
    far = np.array([30.0, 30.0])
    assert [monitor.observe(far, library, RETRIEVAL).status for _ in range(5)] == [GAP_SUSPECTED] * 4 + [GAP]
    # 4 from a (relative 0.4): covered by distance, but its scale-free support 10/4 = 2.5 is below 3
    strict = CoverageMonitor(CoverageSettings(min_scale_free_support=3.0))
    r = strict.observe(np.array([4.0, 0.0]), library, RETRIEVAL)
    assert r.uncovered and r.relative_distance < 0.5 and r.scale_free_support == pytest.approx(2.5)
    assert not CoverageMonitor().observe(np.array([4.0, 0.0]), library, RETRIEVAL).uncovered


def test_capture_is_rate_limited_size_bounded_and_ready_to_label(tmp_path):
    library, clock = _library(), [0.0]
    capture = tmp_path / "capture"
    settings = CoverageSettings(window=4, suspect_fraction=0.25, gap_fraction=0.5, capture_dir=str(capture),
                                capture_period_s=1.0, capture_max_frames=3)
    monitor = CoverageMonitor(settings, classes=("road", "sky"), navigator_id="nav", clock=lambda: clock[0])
    rng = np.random.default_rng(0)
    captured = []
    for i in range(60):                      # 6 s at 10 Hz, all uncovered
        clock[0] = i / 10
        image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        r = monitor.observe(np.array([30.0, 30.0 + i]), library, RETRIEVAL, image, f"frame_{i:03d}", {"index": i})
        if r.captured:
            captured.append(i)
            np.testing.assert_array_equal(np.asarray(Image.open(capture / "images" / f"frame_{i:03d}.png")), image)
    assert captured == [0, 10, 20]          # one per second, three at most
    assert r.frames_captured == 3 and r.capture_full and r.capture_dir == str(capture)
    assert any(problem and "is full (3 frames)" in text for problem, text in monitor.describe(r))
    names, embeddings, records, info = read_capture(capture)
    assert names == ["frame_000", "frame_010", "frame_020"] and info == {"navigator": "nav"}
    np.testing.assert_allclose(embeddings[1], [30.0, 40.0])
    assert records[2]["index"] == 20 and records[2]["nearest_adapters"] == ["c"] and records[2]["status"] == "gap"
    folder = open_domain(capture, require_labels=False)            # the dataset format: add labels/ to train
    assert folder.classes == ("road", "sky") and [s.stem for s in folder.samples] == names
    # A covered frame is never captured; a restarted monitor counts the frames already there.
    again = CoverageMonitor(settings.replace(capture_max_frames=4), navigator_id="nav", clock=lambda: 100.0)
    assert again.capture.count == 3
    assert not again.observe(np.array([0.5, 0.0]), library, RETRIEVAL, image, "covered").captured
    with pytest.raises(ValueError, match="navigator 'nav', not 'other'"):
        CoverageMonitor(settings, navigator_id="other")
    assert json.loads((capture / "capture.json").read_text()) == {"navigator": "nav"}


def test_settings_are_validated_and_change_live(tmp_path):
    with pytest.raises(ValueError, match="suspect_fraction 0.9 must not exceed gap_fraction 0.8"):
        CoverageSettings(suspect_fraction=0.9)
    with pytest.raises(ValueError, match="window"):
        CoverageSettings(window=0)
    with pytest.raises(ValueError, match="max_relative_distance"):
        CoverageSettings(max_relative_distance=-1.0)
    with pytest.raises(ValueError, match="unknown CoverageSettings"):
        CoverageSettings().replace(windw=3)
    library, monitor = _library(), CoverageMonitor(CoverageSettings(window=10))
    for _ in range(10):
        monitor.observe(np.array([30.0, 30.0]), library, RETRIEVAL)
    monitor.update_settings(window=4, max_relative_distance=100.0)
    r = monitor.observe(np.array([30.0, 30.0]), library, RETRIEVAL)
    assert not r.uncovered and r.uncovered_fraction == pytest.approx(3 / 4)   # the window kept its newest frames
    assert monitor.capture is None
    monitor.update_settings(capture_dir=str(tmp_path / "later"))
    assert monitor.capture is not None and (tmp_path / "later" / "images").is_dir()
    with pytest.raises(ValueError):
        monitor.update_settings(gap_fraction=0.1)
    assert monitor.settings.gap_fraction == 0.8                                # refused: nothing changed


def test_the_segmenters_retrieval_is_reused_and_unusable_entries_are_not_nearest():
    metric = "euclidean"   # (cosine is undefined at centroid a, the origin)
    settings = SegmenterSettings(top_k=2, metric=metric)
    library, e = _library(), np.array([9.0, 1.0])
    found = retrieve(e, library.index, settings.top_k, settings.temperature, metric)
    searched, reused = CoverageMonitor().observe(e, library, settings), CoverageMonitor().observe(
        e, library, settings, found=found)
    assert searched == reused and searched.nearest_distance == pytest.approx(math.hypot(1.0, 1.0))
    library._exclude([(1, "truncated since the open")])      # b, the nearest, found unusable (as select does)
    report = CoverageMonitor().observe(e, library, settings)
    assert "b" not in report.nearest_adapters and report.nearest_distance == pytest.approx(math.hypot(9.0, 1.0))
