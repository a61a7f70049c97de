"""What makes the EMA "over": one rule per `trigger` setting, read by the debouncer on every embedded frame.

- distance (the mission's rule): ||e_bar - r|| > threshold. Blind to the library: two domains whose
  centroids sit closer than the threshold never swap, and a far move between two points that retrieve
  the same adapter does.
- retrieval: the fusion retrieval would build for e_bar differs materially from the one it built for r.
  Either its top-1 adapter changed AND e_bar is closer to the new top-1's centroid than to the active
  top-1's by `margin` (hysteresis: noise around the midpoint between two centroids cannot flip it back
  and forth), or the top-1 is the same and the weights moved by more than `weight_change` in total
  variation (half the L1 distance over the union of both fusions' adapters, in [0, 1]).

How long "over" must hold (consecutive frames, dwell, cooldown) is the debouncer's business; it
counts a run of over frames only while the rule's `candidate` (what a swap would lead to) stays the
same, so an EMA passing through one adapter's region on its way to another is not one long run.
"""
from __future__ import annotations

import numpy as np

from .recall import total_variation
from .retrieval import CentroidIndex, Retrieval, retrieve


def weight_distance(a: Retrieval, b: Retrieval) -> float:
    """Total variation distance between two fusions' weights over the union of their adapters, in [0, 1]."""
    return total_variation(a.indices.tolist(), a.weights, b.indices.tolist(), b.weights)


class DistanceRule:
    """Over when the EMA is more than `threshold` from the reference (absolute units)."""

    def __init__(self, threshold: float):
        self.threshold = float(threshold)

    def over(self, ema: np.ndarray, reference: np.ndarray) -> bool:
        return float(np.linalg.norm(ema - reference)) > self.threshold

    def candidate(self, ema: np.ndarray):
        """Any point beyond the threshold leads to the same swap: a new query."""
        return None


class RetrievalRule:
    """Over when retrieval for the EMA would build a materially different fusion than for the reference.

    `source` is what retrieval searches: a library (its `index` is read on every call, so entries found
    unusable since are never ranked), a `CentroidIndex`, or an (N,D) array. One EMA is retrieved once however
    often the debouncer asks about it (`over`, then `candidate`), and the reference's retrieval is kept while
    the reference stays: a decision costs one index retrieval at any library size.
    `margin` is in euclidean embedding units (the debouncer's geometry), whatever `metric` ranks by.
    """

    def __init__(self, source, top_k: int, temperature: float, metric: str, margin: float, weight_change: float):
        self._source = source if hasattr(source, "index") or isinstance(source, CentroidIndex) \
            else CentroidIndex(np.asarray(source, dtype=np.float64))
        self.top_k, self.temperature, self.metric = int(top_k), float(temperature), metric
        self.margin, self.weight_change = float(margin), float(weight_change)
        self._memo: dict[bytes, tuple[CentroidIndex, Retrieval]] = {}   # the last few queries retrieved

    @property
    def index(self) -> CentroidIndex:
        source = self._source
        return source if isinstance(source, CentroidIndex) else source.index

    def retrieve(self, query) -> Retrieval:
        query = np.asarray(query, dtype=np.float64)
        key, index = query.tobytes(), self.index
        held = self._memo.pop(key, None)   # re-inserted last: the least recently used goes first
        if held is None or held[0] is not index:   # a new index: an entry was excluded since
            held = (index, retrieve(query, index, self.top_k, self.temperature, self.metric))
        self._memo[key] = held
        if len(self._memo) > 4:
            self._memo.pop(next(iter(self._memo)))
        return held[1]

    def over(self, ema: np.ndarray, reference: np.ndarray) -> bool:
        active, candidate = self.retrieve(reference), self.retrieve(ema)
        if not len(active.indices) or not len(candidate.indices):
            return False     # nothing usable is left to fuse
        old, new = int(active.indices[0]), int(candidate.indices[0])
        if old != new:
            d_old, d_new = np.linalg.norm(self.index.rows([old, new]) - np.asarray(ema)[None, :], axis=1)
            return float(d_old - d_new) > self.margin
        return weight_distance(active, candidate) > self.weight_change

    def candidate(self, ema: np.ndarray) -> int:
        """The top-1 adapter (library row) of the fusion a swap for `ema` would build (-1: none is usable)."""
        r = self.retrieve(ema)
        return int(r.indices[0]) if len(r.indices) else -1
