"""Clustering frame embeddings: as many clusters as the data has at the library's scale, small clusters
absorbed, ids in frame order, one cluster when the library has no spacing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from semla_ros.relabel.cluster import ClusterSettings, cluster_embeddings


def _blobs(centres, sizes, spread, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([c + spread * rng.standard_normal((n, len(c))) for c, n in zip(centres, sizes, strict=True)])


def test_the_number_of_clusters_follows_the_data_at_the_libraries_scale():
    centres = np.eye(3, 8) * 10.0            # pairwise 14.1 apart
    x = _blobs(centres, [40, 30, 25], spread=0.3)
    labels = cluster_embeddings(x, spacing=10.0, settings=ClusterSettings(scale=0.5, min_size=5))
    assert labels.tolist() == [0] * 40 + [1] * 30 + [2] * 25
    # A spacing 10x larger makes the three domains one at the same scale factor.
    assert set(cluster_embeddings(x, spacing=100.0, settings=ClusterSettings(scale=0.5, min_size=5))) == {0}


def test_ids_follow_frame_order_and_small_clusters_join_the_nearest_large_one():
    centres = [np.zeros(4), np.full(4, 5.0), np.array([0.0, 0, 0, 2.6])]
    x = _blobs(centres, [20, 20, 3], spread=0.05)
    order = np.r_[20:40, 0:20, 40:43]        # the second domain comes first in the drive
    labels = cluster_embeddings(x[order], spacing=4.0, settings=ClusterSettings(scale=0.5, min_size=5))
    assert labels[:20].tolist() == [0] * 20 and labels[20:40].tolist() == [1] * 20
    # the 3-frame blob is nearer the origin blob than the (5,5,5,5) one
    assert labels[40:].tolist() == [1, 1, 1]
    # every cluster too small: one cluster
    assert set(cluster_embeddings(x, spacing=4.0, settings=ClusterSettings(scale=0.5, min_size=50))) == {0}


def test_degenerate_inputs_and_bad_settings():
    x = np.random.default_rng(1).standard_normal((6, 3))
    assert cluster_embeddings(x, math.nan).tolist() == [0] * 6          # one adapter: one possible fusion
    assert cluster_embeddings(x[:1], 1.0).tolist() == [0]
    assert cluster_embeddings(np.zeros((0, 3)), 1.0).tolist() == []
    identical = np.ones((12, 3))
    assert set(cluster_embeddings(identical, 1.0, ClusterSettings(min_size=2))) == {0}
    with pytest.raises(ValueError, match=r"scale: 0 outside \(0, inf\)"):
        ClusterSettings(scale=0)
    with pytest.raises(ValueError, match=r"min_size: 0 outside \[1, inf\)"):
        ClusterSettings(min_size=0)
    with pytest.raises(ValueError, match=r"\(N,D\)"):
        cluster_embeddings(x[0], 1.0)
