"""Offline gap detection asks for the node's evidence: a relabelling job's frames are judged by the node's own
CoverageMonitor in frame order, so scattered uncovered frames in a covered drive propose nothing, and a
sustained stretch (a full window mostly uncovered) proposes its frames, the window that confirmed it included."""
from __future__ import annotations

import numpy as np
import pytest

from semla_ros.core.coverage import CoverageSettings
from semla_ros.core.library import AdapterEntry, AdapterLibrary
from semla_ros.core.settings import SegmenterSettings
from semla_ros.relabel.cluster import ClusterSettings
from semla_ros.relabel.gaps import propose, sustained_uncovered

RETRIEVAL = SegmenterSettings(top_k=1)
COVERAGE = CoverageSettings()          # the node's defaults: 80 % of the last 20 embedded frames


def _library():
    """Centroids a=(0,0), b=(10,0), c=(0,10): median spacing 10."""
    entries = [AdapterEntry(n, {}, 1.0, np.array(p, np.float32), {"navigator": "nav"}, False)
               for n, p in {"a": (0.0, 0.0), "b": (10.0, 0.0), "c": (0.0, 10.0)}.items()]
    return AdapterLibrary(None, entries)


def _drive(far_at) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = np.array([1.0, 0.0]) + 0.1 * rng.normal(size=(300, 2))       # inside the library's coverage
    frames[list(far_at)] = np.array([30.0, 31.0]) + 0.1 * rng.normal(size=(len(far_at), 2))
    return frames


def test_scattered_uncovered_frames_of_a_covered_drive_propose_nothing():
    scattered = range(3, 300, 9)                                            # 11 % of the frames, spread out
    uncovered, in_gap = sustained_uncovered(_drive(scattered), _library(), COVERAGE, RETRIEVAL)
    assert uncovered.sum() == len(scattered)                                # each one IS uncovered ...
    assert not in_gap.any()                                                 # ... but no window is a gap
    frames = _drive(scattered)
    assert propose([str(i) for i in np.flatnonzero(in_gap)], frames[in_gap], _library(), ClusterSettings()) == []


def test_a_sustained_stretch_is_a_gap_with_the_window_that_confirmed_it():
    stretch = range(100, 160)
    uncovered, in_gap = sustained_uncovered(_drive(stretch), _library(), COVERAGE, RETRIEVAL)
    assert np.flatnonzero(in_gap).tolist() == list(stretch)                # from its first frame, none outside
    assert uncovered.sum() == len(stretch)


@pytest.mark.parametrize("length", [15, 16])
def test_a_stretch_shorter_than_the_windows_gap_share_is_no_gap(length):
    """16 of 20 uncovered is the node's GAP (80 %); 15 is not."""
    _, in_gap = sustained_uncovered(_drive(range(100, 100 + length)), _library(), COVERAGE, RETRIEVAL)
    assert in_gap.sum() == (16 if length == 16 else 0)
