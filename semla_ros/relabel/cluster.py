"""Group frame embeddings into domains, each to be fused once (scikit-learn).

Why the library's spacing sets the scale: the median distance between adapter centroids is the
distance at which the library offers a different adapter, so frames much closer to each other than
that get nearly the same fusion anyway. Frames whose average distance is below `scale` x spacing end
up together (average linkage); the number of clusters follows from the data. BIRCH first summarises
the embeddings in one pass into subclusters of radius scale x spacing / 2 (bounded memory for long
drives), then agglomerative clustering groups the subclusters with that distance threshold.
A cluster smaller than `min_size` frames is not worth a fusion of its own: its frames join the
nearest large cluster. Cluster ids follow the frame order (the first frame is in cluster 0), and the
result depends only on the embeddings and their order, so every run of a job gets the same clusters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering, Birch

from ..core import fields
from ..core.fields import setting


@dataclass(frozen=True)
class ClusterSettings:
    scale: float = setting(0.5, low=0.0, low_open=True,
                           help="clustering distance, in units of the library's median centroid spacing")
    min_size: int = setting(10, low=1, help="frames; smaller clusters join the nearest large one")

    def __post_init__(self):
        fields.validate(self)


def cluster_embeddings(embeddings, spacing: float, settings: ClusterSettings = ClusterSettings()) -> np.ndarray:
    """(N,) cluster ids of (N,D) embeddings; one cluster when the spacing is unknown (< 2 adapters)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N,D), got shape {x.shape}")
    n = len(x)
    if n < 2 or not (math.isfinite(spacing) and spacing > 0):
        return np.zeros(n, np.int64)
    threshold = settings.scale * spacing
    birch = Birch(threshold=threshold / 2, branching_factor=50, n_clusters=None).fit(x)
    centers = birch.subcluster_centers_
    sub = birch.predict(x)
    if len(centers) > 1:
        groups = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, linkage="average",
                                         metric="euclidean").fit_predict(centers)
        labels = groups[sub]
    else:
        labels = np.zeros(n, np.int64)
    return _renumber(_absorb_small(x, labels, settings.min_size))


def _absorb_small(x: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    ids, counts = np.unique(labels, return_counts=True)
    large = ids[counts >= min_size]
    if len(large) == 0:
        return np.zeros(len(x), np.int64)
    if len(large) == len(ids):
        return labels
    centroids = np.stack([x[labels == c].mean(axis=0) for c in large])
    out = labels.copy()
    small = ~np.isin(labels, large)
    nearest = np.linalg.norm(x[small, None, :] - centroids[None], axis=-1).argmin(axis=1)
    out[small] = large[nearest]
    return out


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Ids in order of first appearance."""
    order = {}
    for c in labels.tolist():
        order.setdefault(c, len(order))
    return np.array([order[c] for c in labels.tolist()], np.int64)
