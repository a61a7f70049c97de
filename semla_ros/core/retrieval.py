"""SemLA retrieval: which adapters to fuse for a domain embedding, and with what weights.

Official SemLA: d_i = ||e - c_i||_2, s_i = 1/d_i, keep the top-K by similarity,
w = softmax(s / T). The official code evaluates exp(s/T) without subtracting the maximum,
which overflows for small distances; we subtract the maximum (the same value wherever the
official formula is finite) and handle exact matches (d = 0, s = inf) as their limit.
Everything is float64 so that weights match the official ones to ~1e-12.

A library of thousands of adapters is searched through a `CentroidIndex`: a half-precision copy
of the centroids finds, with a proven error bound, the few rows that can be in the top K (one
matrix-vector product over half the bytes of float32), and only those get the exact float64
distance. The result is the exact search's, index for index and bit for bit.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .settings import DEFAULTS, METRICS

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)
PREFILTER_MIN_ROWS = 512   # below this the exact pass is as fast as the prefilter


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


def _stable_top(rows: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of highest similarity 1/d; `rows` ascending, so ties keep library order."""
    order = np.argsort(-similarities(dist), kind="stable")[:k]
    return rows[order].astype(np.int64), dist[order]


@functools.lru_cache(maxsize=None)
def _half_dot_is_float32_accumulated(dim: int) -> bool:
    """Whether torch's float16 matrix-vector product sums in float32 here (the prefilter's error
    bound needs it): an all-positive probe whose float16 running sum would be far off."""
    import torch

    rng = np.random.default_rng(0)
    rows = (rng.uniform(0.25, 1.0, size=(8, dim)) / np.sqrt(dim)).astype(np.float16)
    vec = (rng.uniform(0.25, 1.0, size=dim) / np.sqrt(dim)).astype(np.float16)
    got = (torch.from_numpy(rows) @ torch.from_numpy(vec)).double().numpy()
    exact = rows.astype(np.float64) @ vec.astype(np.float64)
    bound = _dot_error_coefficient(dim) * np.linalg.norm(rows.astype(np.float64), axis=1) \
        * np.linalg.norm(vec.astype(np.float64))
    ok = bool(np.all(np.abs(got - exact) <= bound))
    if not ok:
        LOG.warning("this torch build does not sum float16 dot products in float32: retrieval uses the exact "
                    "pass only (same results, slower on large libraries)")
    return ok


def _dot_error_coefficient(dim: int) -> float:
    """|computed - exact| <= this * ||q|| ||c|| for a float16 dot product of length `dim` summed in
    float32 (products of float16 numbers are exact in float32) and rounded to float16."""
    u16, u32 = 2.0 ** -11, 2.0 ** -24
    gamma = dim * u32 / (1.0 - dim * u32)
    return u16 + 2.0 * gamma + 1e-6


class CentroidIndex:
    """(N,D) centroids prepared for exact top-K retrieval that stays fast as N grows.

    Euclidean queries on N >= PREFILTER_MIN_ROWS rows first run a float16 matrix-vector product:
    with the rounding of that product bounded (`_dot_error_coefficient`) and each row's and the
    query's quantisation error known exactly, every row gets an interval holding its true
    distance; only rows whose interval starts below the K-th smallest interval end can be in the
    top K, and those (usually about K) get the exact float64 distance of `distances`. Rows in
    `exclude` (entries found unusable) are never returned. Read-only; `excluding()` makes a copy
    sharing the arrays.
    """

    def __init__(self, centroids, *, prefilter: bool | None = None):
        """`prefilter`: None builds it from PREFILTER_MIN_ROWS rows on; False never (one-off searches)."""
        rows = np.asarray(centroids)
        if rows.ndim != 2:
            raise ValueError(f"centroids must be (N,D), got shape {rows.shape}")
        if not np.issubdtype(rows.dtype, np.floating):
            rows = rows.astype(np.float64)
        self._rows = rows
        self._exclude: np.ndarray = np.zeros(0, np.int64)
        self._half: torch.Tensor | None = None   # float16 rows of the prefilter (None: exact pass only)
        wanted = len(rows) >= PREFILTER_MIN_ROWS if prefilter is None else prefilter
        if wanted and len(rows) and rows.shape[1] and np.all(np.isfinite(rows)) \
                and _half_dot_is_float32_accumulated(rows.shape[1]):
            self._build_prefilter()

    def _build_prefilter(self, block: int = 256) -> None:
        """In blocks of rows: float64 temporaries of the whole matrix would stay in the process's heap
        (60 MB at 10,000 x 768) long after they are freed."""
        import torch

        rows = self._rows
        blocks = [slice(i, i + block) for i in range(0, len(rows), block)]
        self._scale = max(float(np.linalg.norm(rows[b].astype(np.float64), axis=1).max()) for b in blocks) or 1.0
        half = np.empty(rows.shape, np.float16)
        half_sq = np.empty(len(rows))                                   # ||c_hat||^2
        quant_err = 0.0                                                 # max ||c/s - c_hat||
        for b in blocks:
            scaled = rows[b].astype(np.float64) / self._scale
            half[b] = scaled
            half64 = half[b].astype(np.float64)
            half_sq[b] = np.einsum("ij,ij->i", half64, half64)
            quant_err = max(quant_err, float(np.linalg.norm(scaled - half64, axis=1).max()))
        self._half = torch.from_numpy(half)
        self._half_sq = torch.from_numpy(half_sq)
        self._half_norm_max = float(np.sqrt(half_sq.max()))
        self._quant_err_max = quant_err
        self._dot_coeff = _dot_error_coefficient(rows.shape[1])

    # ------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def dim(self) -> int:
        return self._rows.shape[1]

    @property
    def exclude(self) -> np.ndarray:
        return self._exclude

    def rows(self, indices) -> np.ndarray:
        """These rows' centroids, float64 (K,D): what a caller needs of the matrix without copying all of it."""
        return self._rows[np.asarray(indices, dtype=np.int64)].astype(np.float64)

    def excluding(self, rows) -> "CentroidIndex":
        """The same index with these rows never returned (added to the ones excluded already)."""
        copy = object.__new__(CentroidIndex)
        copy.__dict__.update(self.__dict__)
        copy._exclude = np.union1d(self._exclude, np.asarray(list(rows), dtype=np.int64))
        return copy

    # ------------------------------------------------------------------ search
    def nearest(self, query, top_k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
        """(rows, distances) of the top-K by similarity 1/d, exactly as a full stable sort orders them;
        empty when every row is excluded (nothing usable supports the query)."""
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        q = _as_query(query, self.dim)
        if not len(self._rows):
            raise ValueError("cannot retrieve from an empty library")
        k = min(int(top_k), len(self._rows) - len(self._exclude))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        if metric == "euclidean" and self._half is not None:
            rows = self._candidates(q, k)
            if rows is not None:
                return _stable_top(rows, np.linalg.norm(self._rows[rows].astype(np.float64) - q[None, :], axis=1), k)
        d = distances(q, self._rows, metric)
        rows = np.arange(len(self._rows))
        if len(self._exclude):
            keep = np.ones(len(rows), bool)
            keep[self._exclude] = False
            rows, d = rows[keep], d[keep]
        return _stable_top(rows, d, k)

    def _candidates(self, q: np.ndarray, k: int) -> np.ndarray | None:
        """Ascending rows that may be in the top k (a proven superset); None: query out of float16 range.

        In units of the scale s: ||q/s - c/s|| is within `margin` of ||q_hat - c_hat||, whose square
        `approx` is computed within `slack`; so a row can only beat the k-th smallest upper bound
        sqrt(approx_k + slack) + margin if approx <= (that bound + margin)^2 + slack.
        """
        import torch

        scaled = q / self._scale
        if not np.linalg.norm(scaled) <= 1e4:     # keeps every float16 product and sum finite
            return None
        half = scaled.astype(np.float16)
        half64 = half.astype(np.float64)
        q_sq = float(half64 @ half64)
        rows16 = self._half
        if rows16 is None:
            return None
        approx = (rows16 @ torch.from_numpy(half)).double()   # torch: numpy's partition is 3x slower here
        approx.mul_(-2.0).add_(self._half_sq).add_(q_sq)           # ||q_hat - c_hat||^2 for every row
        slack = 2.0 * (self._dot_coeff * np.sqrt(q_sq) * self._half_norm_max + 2.0 ** -25) \
            + 1e-12 * (q_sq + self._half_norm_max ** 2)
        margin = float(np.linalg.norm(scaled - half64)) + self._quant_err_max
        if len(self._exclude):
            approx[torch.from_numpy(self._exclude)] = np.inf
        kth = float(approx.topk(k, largest=False).values.max())   # topk: 4x faster than kthvalue here
        bound = (np.sqrt(kth + slack) + margin) * (1.0 + 1e-9) / (1.0 - 1e-9) + 1e-300
        return torch.nonzero(approx <= (bound + margin) ** 2 + slack).flatten().numpy()


def retrieve(query, centroids, top_k: int = DEFAULTS.top_k, temperature: float = DEFAULTS.temperature,
             metric: str = DEFAULTS.metric) -> Retrieval:
    """Top-K adapters by similarity 1/d and their softmax(s/T) weights (official SemLA).

    `centroids`: an (N,D) array, or a `CentroidIndex` (a library's `index`: fast at any N, and
    without the entries found unusable).
    """
    index = centroids if isinstance(centroids, CentroidIndex) else CentroidIndex(centroids, prefilter=False)
    rows, d = index.nearest(query, top_k, metric)
    s = similarities(d)
    return Retrieval(indices=rows, weights=softmax_weights(s, temperature), distances=d, similarities=s)


def support_score(weights, dists) -> float:
    """Paper eq. 15: S = sum_i w_i / d_i over the retrieved adapters (inf for an exact match with weight;
    an adapter with weight 0 adds nothing, even at distance 0)."""
    w = np.asarray(weights, dtype=np.float64)
    s = similarities(dists)
    with np.errstate(invalid="ignore"):   # 0 * inf, masked out
        return float(np.sum(np.where(w > 0.0, w * s, 0.0)))


def scale_free_support(weights, dists, spacing: float) -> float:
    """Eq. 15 in units of the library's own centroid spacing: sum_i w_i * spacing / d_i.

    Dimensionless, so comparable across libraries and navigators: 1 means the retrieved
    adapters are, on average, as far from the query as two typical centroids are from each
    other. nan when the spacing is unknown (a library with fewer than two entries).
    """
    if not np.isfinite(spacing) or spacing <= 0:
        return float("nan")
    return support_score(weights, dists) * float(spacing)
