"""Sequential evidence that the camera left the active fusion's domain: the `evidence` trigger.

Per embedded frame e and candidate adapter b (a row the frame retrieves in its top-K, other than the
active fusion's top-1 a), the frame's evidence for b over a is

    y_b = (||e - c_a|| - ||e - c_b||) / ||c_a - c_b||

(in (-1, 1): about -0.4 per frame of a's domain and +0.4 per frame of b's on the demo world, whatever the
two domains' spacing, because the navigator's noise grows with it). Each candidate keeps a CUSUM,
S_b <- max(0, S_b + y_b): noise drifts it back to 0, a real change adds up. A shift to b is confirmed
when S_b reaches `threshold` (plus the flap damping below): strong evidence decides in a few frames, weak
evidence waits, and no fixed dwell is paid. The query of the fusion is the mean of the raw embeddings
since S_b last left 0 (at most `window` of them): all of them already show the new domain.

Flap damping (as route-flap damping in BGP): a swap back to the adapter left less than `flap_window_s`
earlier is a flap and adds `flap_penalty` to a penalty that halves every `flap_half_life_s`. The
evidence a shift needs grows by penalty * (median spacing / spacing of the two centroids)^4: flicker
between near domains (whose fusions differ little) stops being followed after a flap or two, flicker
between far domains (where following pays) is still followed.

Cost per frame: distances to the frame's top-K rows and at most MAX_TRACKED candidates still holding
evidence (the frame's retrieval is computed once by the caller), whatever the library's size.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .retrieval import CentroidIndex

NEAR_EXPONENT = 4.0   # how much harder a flap between near domains is damped (see the module docstring)
MAX_TRACKED = 16      # candidates whose evidence is kept between frames (the strongest)


@dataclass(frozen=True)
class EvidenceShift:
    """A confirmed shift: the candidate row, its statistic and the query to fuse for."""

    row: int
    statistic: float
    needed: float
    query: np.ndarray
    frames: int


class ShiftEvidence:
    """Per-candidate CUSUM over an index (`source`: a library, whose `index` is read on every call so
    excluded entries are never candidates, or a `CentroidIndex`); `median_spacing` scales the flap damping."""

    def __init__(self, source, threshold: float, window: int, flap_window_s: float, flap_penalty: float,
                 flap_half_life_s: float, median_spacing: float):
        self._source = source
        self.threshold, self.window = float(threshold), max(1, int(window))
        self.flap_window_s, self.flap_penalty = float(flap_window_s), float(flap_penalty)
        self.flap_half_life_s = float(flap_half_life_s)
        self.median_spacing = float(median_spacing)
        self.reset()
        self.forget_flaps()

    @property
    def index(self) -> CentroidIndex:
        source = self._source
        return source if isinstance(source, CentroidIndex) else source.index

    def reset(self) -> None:
        """Every candidate starts from no evidence (after a swap, a failed fusion or time running back)."""
        self._statistic: dict[int, float] = {}
        self._runs: dict[int, deque] = {}

    def forget_flaps(self) -> None:
        self._penalty = 0.0
        self._penalty_time = -math.inf
        self._left: int | None = None          # the top-1 before the active one
        self._moved_at = -math.inf

    @property
    def statistics(self) -> dict[int, float]:
        return dict(self._statistic)

    @property
    def leading_frames(self) -> int:
        """Frames behind the largest statistic (0: no candidate has evidence): a shift may be coming."""
        if not self._statistic:
            return 0
        return len(self._runs[max(self._statistic, key=self._statistic.__getitem__)])

    def drop(self, row: int) -> None:
        """Forget one candidate's evidence (its run turned out to retrieve the active adapter after all)."""
        self._statistic.pop(row, None)
        self._runs.pop(row, None)

    def penalty(self, now: float) -> float:
        if self._penalty == 0.0 or not math.isfinite(self._penalty_time):
            return self._penalty
        return self._penalty * 0.5 ** (max(0.0, now - self._penalty_time) / self.flap_half_life_s)

    def needed(self, active: int, candidate: int, spacing: float, now: float) -> float:
        """The evidence a shift from `active` to `candidate` needs now (threshold + flap damping)."""
        penalty = self.penalty(now)
        if penalty == 0.0:
            return self.threshold
        if not spacing > 0.0 or not math.isfinite(self.median_spacing):
            return math.inf
        return self.threshold + penalty * (self.median_spacing / spacing) ** NEAR_EXPONENT

    def moved(self, old: int, new: int, now: float) -> None:
        """The active top-1 changed from `old` to `new` at `now` (a swap became active): flaps add penalty."""
        if old == new:
            return
        if self._left == new and now - self._moved_at <= self.flap_window_s:
            self._penalty = self.penalty(now) + self.flap_penalty
            self._penalty_time = now
        self._left, self._moved_at = old, now

    def observe(self, embedding: np.ndarray, active: int, candidates, now: float) -> EvidenceShift | None:
        """One embedded frame: update every candidate's statistic; a shift when one has enough."""
        if active < 0:
            return None
        rows = [active] + sorted({int(r) for r in candidates} | set(self._statistic) - {active})
        if len(rows) == 1:
            return None
        e = np.asarray(embedding, dtype=np.float64).reshape(-1)
        centroids = self.index.rows(rows)
        d = np.linalg.norm(centroids - e[None, :], axis=1)
        spacing = np.linalg.norm(centroids[1:] - centroids[0][None, :], axis=1)
        best_row, best_margin = -1, -math.inf
        for k, row in enumerate(rows[1:]):
            if not spacing[k] > 0.0:
                continue    # a duplicate of the active centroid: no frame can tell them apart
            s = max(0.0, self._statistic.get(row, 0.0) + float(d[0] - d[k + 1]) / float(spacing[k]))
            if s == 0.0:
                self._statistic.pop(row, None)
                self._runs.pop(row, None)
                continue
            self._statistic[row] = s
            self._runs.setdefault(row, deque(maxlen=self.window)).append(e)
            margin = s - self.needed(active, row, float(spacing[k]), now)
            if margin >= 0.0 and margin > best_margin:
                best_row, best_margin = row, margin
        self._keep_strongest()
        if best_row < 0:
            return None
        run = self._runs[best_row]
        statistic = self._statistic[best_row]
        return EvidenceShift(best_row, statistic, statistic - best_margin, np.mean(np.stack(run), axis=0), len(run))

    def _keep_strongest(self) -> None:
        """At most MAX_TRACKED candidates keep their evidence (the largest): a frame's cost stays bounded even
        when the camera jumps between many domains."""
        if len(self._statistic) <= MAX_TRACKED:
            return
        for row in sorted(self._statistic, key=self._statistic.__getitem__)[:len(self._statistic) - MAX_TRACKED]:
            del self._statistic[row]
            self._runs.pop(row, None)
