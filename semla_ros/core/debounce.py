"""Domain-shift debouncing: swap adapters only when the camera's domain really changed.

The default trigger, "evidence" (core/evidence.py), weighs every embedded frame's evidence for each other
adapter against the active one and swaps as soon as a candidate's accumulated evidence is enough (a few
frames for a clear change, longer for weak evidence, never on noise); the query is the mean of the frames
behind that evidence. The rules below (EMA, dwell, consecutive hits) belong to the "retrieval" and
"distance" triggers.

Per embedded frame the EMA moves, e_bar <- (1 - alpha) e_bar + alpha e_t. The EMA is "over" when the
trigger rule says so (core/trigger.py: distance to the reference, or a materially different fusion
from retrieval). A shift is confirmed when it has been over, towards the same candidate, for
`min_consecutive` embedded frames in a row AND for `dwell_s` seconds, and `cooldown_s` has passed
since the last fusion attempt. r is the
reference: the query of the fusion being made or active. The "frame" trigger confirms every embedded
frame, for that frame's own embedding (per-image SemLA).

Time is the frames' time (their header stamps in the node), passed in: a bag replayed at any rate
gives the same decisions, and tests replay streams without sleeping. Time running backwards (a bag
that loops) restarts the debouncer cleanly: EMA, warm-up and timers start over, the reference of the
active fusion stays.

The debouncer owns r, not the active fusion (its query is held once, by whoever runs the fusions). A
fusion attempt proposes its query (`propose`: a confirmed shift does it itself); when it fails the
caller `rollback`s it with the active fusion's query and r returns to that (the attempt still counts
for the cooldown, so a failing fusion is retried at most once per cooldown).

On a confirmed shift the query is re-anchored: the EMA still carries (1 - alpha)^n of the old
domain right after a step, so fusing for it and setting r <- e_bar would leave the EMA drifting
on past r and trigger a second swap one cooldown later. Instead e_bar and r are set to the mean
of the raw embeddings of the over run (at most the EMA's effective window (2 - alpha)/alpha of
them): all of them come from after the change. One step, one swap. (The retrieval rule keeps the
EMA as the query when the run's mean alone would not be over, and swaps only on a frame that does
not itself contradict the new fusion: after a short transient the EMA is still over for a few
frames, and those frames already show the old domain again.) Before the first fusion the first
`warmup_frames` embeddings set e_bar directly (their mean) and the last of them asks for the
"startup" fusion.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .evidence import ShiftEvidence
from .settings import THRESHOLD_MODES, TRIGGERS, SegmenterSettings
from .trigger import DistanceRule


@dataclass(frozen=True)
class DebounceDecision:
    shift: bool               # a domain shift is confirmed: fuse for `ema` now (already proposed)
    ema_distance: float       # ||e_bar - r||; nan before a reference exists
    consecutive: int          # embedded frames in a row over the threshold
    startup: bool = False     # warm-up is over, no fusion exists or is being made, and none is cooling down
    warming_up: bool = False
    ema: np.ndarray | None = None  # copy of e_bar after this update
    query: np.ndarray | None = None  # what to fuse for on a shift or startup (e_bar; e_t for the "frame" trigger)
    restarted: bool = False   # time ran backwards: the debouncer started over before this frame


def resolve_threshold(value: float, mode: str, median_inter_centroid_distance: float) -> float:
    """Absolute threshold from a setting: as is, or times the library's median centroid spacing.

    A relative threshold on a library with fewer than two entries is infinite: there is no
    other adapter a shift could lead to.
    """
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold mode must be one of {THRESHOLD_MODES}, got {mode!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"threshold must be a positive number, got {value}")
    if mode == "absolute":
        return float(value)
    if not math.isfinite(median_inter_centroid_distance):
        return math.inf
    return float(value) * float(median_inter_centroid_distance)


def run_window(alpha: float, min_consecutive: int) -> int:
    """How many raw embeddings a confirmed shift's query averages: the EMA's effective window (2 - alpha) / alpha,
    at least min_consecutive (the over run of the EMA triggers, the evidence run of the evidence trigger)."""
    return max(int(min_consecutive), math.ceil((2.0 - alpha) / alpha))


def _vector(embedding) -> np.ndarray | None:
    return None if embedding is None else np.asarray(embedding, dtype=np.float64).reshape(-1).copy()


class DomainShiftDebouncer:
    """Debounces with a `SegmenterSettings` (validated where it was made) and an absolute `threshold` (the
    distance rule's, resolved from switch_threshold by `resolve_threshold`). `trigger` overrides the settings'
    one (the segmenter runs "distance" without a library); `rule` decides when the EMA is over for the
    retrieval trigger (the distance trigger builds its own); `evidence` is the evidence trigger's `ShiftEvidence`."""

    def __init__(self, settings: SegmenterSettings, threshold: float, *, trigger: str | None = None, rule=None,
                 evidence: ShiftEvidence | None = None):
        self.configure(settings, threshold, trigger=trigger, rule=rule, evidence=evidence)
        self.reset()

    def configure(self, settings: SegmenterSettings, threshold: float, *, trigger: str | None = None,
                  rule=None, evidence: ShiftEvidence | None = None) -> None:
        """Change parameters live (checked before any is applied). An infinite threshold means no shift can
        be confirmed by distance (a library with one entry)."""
        trigger = settings.trigger if trigger is None else trigger
        if not float(threshold) > 0.0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        if trigger == "retrieval" and rule is None:
            raise ValueError("the retrieval trigger needs its rule (the library's centroids and retrieval settings)")
        if trigger == "evidence" and evidence is None:
            raise ValueError("the evidence trigger needs its ShiftEvidence (the library's centroids)")
        self.settings, self.threshold, self.trigger, self.rule = settings, float(threshold), trigger, rule
        self.evidence = evidence
        self._reference_row: tuple[bytes, int] | None = None   # (reference bytes, its top-1 row)
        self.alpha, self.dwell_s, self.cooldown_s = settings.ema_alpha, settings.dwell_s, settings.cooldown_s
        self.min_consecutive, self.warmup_frames = settings.min_consecutive, settings.warmup_frames
        self._over = DistanceRule(self.threshold) if trigger == "distance" else rule

    def reset(self) -> None:
        self._reference: np.ndarray | None = None   # query of the fusion being made or active
        self.restart()

    def restart(self) -> None:
        """Start the EMA, warm-up and timers over; the reference (the active fusion) stays."""
        self._ema: np.ndarray | None = None
        self._seen = 0
        self._consecutive = 0
        self._over_since = math.nan
        self._last_attempt = -math.inf
        self._last_time = -math.inf
        self._run: deque = deque()
        evidence = getattr(self, "evidence", None)
        if evidence is not None:
            evidence.reset()
            evidence.forget_flaps()

    @property
    def ema(self) -> np.ndarray | None:
        return None if self._ema is None else self._ema.copy()

    @property
    def reference(self) -> np.ndarray | None:
        return None if self._reference is None else self._reference.copy()

    @property
    def warming_up(self) -> bool:
        return self._seen < self.warmup_frames

    # ------------------------------------------------------------------ the reference's life cycle
    def propose(self, query, now: float) -> None:
        """A fusion for `query` is being made (startup, manual, reload; a shift proposes itself)."""
        if self.evidence is not None and self._reference is not None:   # flaps are counted where swaps start
            self.evidence.moved(self._active_row(self._reference), self._active_row(_vector(query)), float(now))
        self._reference = _vector(query)
        self._last_attempt = float(now)
        self._clear_run()

    def rollback(self, query, active) -> None:
        """The fusion made for `query` failed: unless a newer one is being made, r is `active` again (the
        query of the fusion still active; None: none is)."""
        failed = _vector(query)
        if self._reference is not None and failed is not None and np.array_equal(self._reference, failed):
            self._reference = _vector(active)
            self._clear_run()

    def _clear_run(self) -> None:
        self._consecutive = 0
        self._over_since = math.nan
        self._candidate = None
        self._run.clear()
        if self.evidence is not None:
            self.evidence.reset()

    def _active_row(self, query) -> int:
        """The library row of the top-1 adapter retrieval gives `query` (-1: no query or nothing usable);
        computed once per query."""
        if query is None or self.evidence is None:
            return -1
        key = query.tobytes()
        if self._reference_row is None or self._reference_row[0] != key:
            rows, _ = self.evidence.index.nearest(query, 1, self.settings.metric)
            self._reference_row = (key, int(rows[0]) if len(rows) else -1)
        return self._reference_row[1]

    # ------------------------------------------------------------------ one embedded frame
    def update(self, embedding, now: float, candidates=None) -> DebounceDecision:
        """One embedded frame at `now`; `candidates`: the rows its retrieval ranks (the evidence trigger
        searches them itself when not given)."""
        e = np.asarray(embedding, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(e)):
            raise ValueError("embedding contains NaN or inf")
        if self._ema is not None and e.shape != self._ema.shape:
            raise ValueError(f"embedding has dimension {e.size}, expected {self._ema.size}")
        now = float(now)
        restarted = now < self._last_time
        if restarted:
            self.restart()
        self._last_time = now
        self._seen += 1
        if self._ema is None or self._seen <= self.warmup_frames:
            # Warm-up: the running mean of the first frames, not an EMA from an arbitrary start.
            self._ema = e.copy() if self._ema is None else self._ema + (e - self._ema) / self._seen
        else:
            self._ema = (1.0 - self.alpha) * self._ema + self.alpha * e
        cooling = (now - self._last_attempt) < self.cooldown_s
        warming = self._seen < self.warmup_frames
        if self._reference is None:
            return DebounceDecision(shift=False, ema_distance=math.nan, consecutive=0,
                                    startup=not warming and not cooling, warming_up=warming, ema=self._ema.copy(),
                                    query=self._ema.copy(), restarted=restarted)
        distance = float(np.linalg.norm(self._ema - self._reference))
        if self.trigger == "frame":   # per-image SemLA: every embedded frame fuses for itself
            shift = not warming
            if shift:
                self.propose(e, now)
            return DebounceDecision(shift=shift, ema_distance=distance, consecutive=int(shift), warming_up=warming,
                                    ema=self._ema.copy(), query=e.copy(), restarted=restarted)
        if self.trigger == "evidence":
            return self._weigh_evidence(e, now, candidates, cooling, distance, restarted)
        if self._over.over(self._ema, self._reference):
            candidate = self._over.candidate(self._ema)
            if self._consecutive == 0 or candidate != self._candidate:   # a run leads to one candidate
                self._clear_run()
                self._over_since, self._candidate = now, candidate
            self._consecutive += 1
            self._run.append(e)
            window = run_window(self.alpha, self.min_consecutive)
            while len(self._run) > window:
                self._run.popleft()
        else:
            self._clear_run()
        shift = (self._consecutive >= self.min_consecutive and now - self._over_since >= self.dwell_s
                 and not cooling)
        consecutive = self._consecutive
        if shift:
            anchored = np.mean(np.stack(self._run), axis=0)
            query = anchored if self.trigger == "distance" or self._over.over(anchored, self._reference) else self._ema
            # The EMA lags: when the newest frame already contradicts the new fusion (a transient that has
            # just ended), wait for a frame that agrees.
            shift = self.trigger == "distance" or not self._over.over(e, query)
            if shift:
                self._ema = query
                self.propose(query, now)
        return DebounceDecision(shift=shift, ema_distance=distance, consecutive=consecutive, warming_up=warming,
                                ema=self._ema.copy(), query=self._ema.copy(), restarted=restarted)

    def _weigh_evidence(self, e, now, candidates, cooling, distance, restarted) -> DebounceDecision:
        evidence = self.evidence
        assert evidence is not None and self._reference is not None
        active = self._active_row(self._reference)
        if candidates is None:
            candidates, _ = evidence.index.nearest(e, self.settings.top_k, self.settings.metric)
        found = evidence.observe(e, active, candidates, now)
        shift = found is not None and not cooling
        if found is not None and shift and self._active_row(found.query) == active:
            evidence.drop(found.row)    # the run's mean still retrieves the active adapter first
            shift = False
        consecutive = found.frames if found is not None else evidence.leading_frames
        ema = self._ema
        assert ema is not None
        if shift:
            assert found is not None
            ema = self._ema = found.query.copy()
            self.propose(found.query, now)
        return DebounceDecision(shift=shift, ema_distance=distance, consecutive=consecutive, ema=ema.copy(),
                                query=ema.copy(), restarted=restarted)
