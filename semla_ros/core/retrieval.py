"""SemLA retrieval: which adapters to fuse for a domain embedding, and with what weights.

Official SemLA: d_i = ||e - c_i||_2, s_i = 1/d_i, keep the top-K by similarity,
w = softmax(s / T). The official code evaluates exp(s/T) without subtracting the maximum,
which overflows for small distances; we subtract the maximum (the same value wherever the
official formula is finite) and handle exact matches (d = 0, s = inf) as their limit.
Everything is float64 so that weights match the official ones to ~1e-12.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import DEFAULTS, METRICS


@dataclass(frozen=True)
class Retrieval:
    """The top-K adapters for one query, in descending similarity (the order fusion uses)."""

    indices: np.ndarray       # (K,) int64 rows of the centroid matrix
    weights: np.ndarray       # (K,) float64, sum to 1
    distances: np.ndarray     # (K,) float64
    similarities: np.ndarray  # (K,) float64 = 1 / distances

    @property
    def support(self) -> float:
        """Paper eq. 15 for this retrieval."""
        return support_score(self.weights, self.distances)


def _as_query(query, dim: int | None) -> np.ndarray:
    q = np.asarray(query, dtype=np.float64)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1:
        raise ValueError(f"query must be one embedding of shape (D,) or (1,D), got {q.shape}")
    if dim is not None and q.shape[0] != dim:
        raise ValueError(f"query has dimension {q.shape[0]}, the centroids have {dim}")
    if not np.all(np.isfinite(q)):
        raise ValueError("query embedding contains NaN or inf")
    return q


def distances(query, centroids, metric: str = "euclidean") -> np.ndarray:
    """Distance from one query (D,) to every centroid (N,D), float64 (N,).

    "euclidean" is the official measure; "cosine" is 1 - cos(e, c_i) (in [0, 2]).
    """
    c = np.asarray(centroids, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"centroids must be (N,D), got shape {c.shape}")
    q = _as_query(query, c.shape[1])
    if metric == "euclidean":
        return np.linalg.norm(c - q[None, :], axis=1)
    if metric == "cosine":
        qn = np.linalg.norm(q)
        cn = np.linalg.norm(c, axis=1)
        if qn == 0.0 or np.any(cn == 0.0):
            raise ValueError("cosine distance is undefined for a zero-length embedding")
        return 1.0 - (c @ q) / (cn * qn)
    raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")


def similarities(dist: np.ndarray) -> np.ndarray:
    """s = 1/d (inf for an exact match)."""
    d = np.asarray(dist, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(d > 0.0, 1.0 / np.maximum(d, np.finfo(np.float64).tiny), np.inf)


def softmax_weights(sims: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(s / T) computed stably; exact matches (s = inf) share all the weight."""
    s = np.asarray(sims, dtype=np.float64)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if s.size == 0:
        return s.copy()
    inf = np.isinf(s)
    if inf.any():
        return inf.astype(np.float64) / inf.sum()
    z = np.exp((s - s.max()) / temperature)
    return z / z.sum()


def retrieve(query, centroids, top_k: int = DEFAULTS.top_k, temperature: float = DEFAULTS.temperature,
             metric: str = DEFAULTS.metric) -> Retrieval:
    """Top-K adapters by similarity 1/d and their softmax(s/T) weights (official SemLA)."""
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    d = distances(query, centroids, metric)
    if d.size == 0:
        raise ValueError("cannot retrieve from an empty library")
    s = similarities(d)
    # Stable sort on -s: ties keep library order, like Python's sorted(..., reverse=True).
    order = np.argsort(-s, kind="stable")[: min(int(top_k), d.size)]
    return Retrieval(indices=order.astype(np.int64), weights=softmax_weights(s[order], temperature),
                     distances=d[order], similarities=s[order])


def support_score(weights, dists) -> float:
    """Paper eq. 15: S = sum_i w_i / d_i over the retrieved adapters (inf for an exact match)."""
    w = np.asarray(weights, dtype=np.float64)
    return float(np.sum(w * similarities(dists)))


def scale_free_support(weights, dists, spacing: float) -> float:
    """Eq. 15 in units of the library's own centroid spacing: sum_i w_i * spacing / d_i.

    Dimensionless, so comparable across libraries and navigators: 1 means the retrieved
    adapters are, on average, as far from the query as two typical centroids are from each
    other. nan when the spacing is unknown (a library with fewer than two entries).
    """
    if not np.isfinite(spacing) or spacing <= 0:
        return float("nan")
    return support_score(weights, dists) * float(spacing)
