"""FusionDecider: when to fuse and for what, from each embedding and the pending requests.

Every embedding updates the debouncer (core/debounce.py) and is retrieved once in the library; the
decider then asks the adaptation runner for at most one adaptation: for a confirmed shift, for a
pending request (served by that adaptation, under the request's reason), or for the startup fusion.
While a shift is being confirmed it has the runner read the adapters it would fuse ahead of time.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .adaptation import AdaptationRunner
from .debounce import DebounceDecision, DomainShiftDebouncer, resolve_threshold, run_window
from .evidence import ShiftEvidence
from .library import AdapterLibrary
from .requests import PendingRequest
from .retrieval import Retrieval, retrieve
from .settings import SegmenterSettings
from .support import Support, frame_support
from .trigger import RetrievalRule


def trigger_rules(settings: SegmenterSettings, library: AdapterLibrary | None) -> dict:
    """The debouncer's trigger and what it needs, for `settings` over `library` (no library: the distance
    trigger, which has nothing to retrieve from and never confirms with an infinite threshold)."""
    if library is None:
        return {"trigger": "distance"}
    s, spacing = settings, library.median_inter_centroid_distance
    if s.trigger == "retrieval":
        margin = 0.0 if s.switch_margin == 0.0 else resolve_threshold(s.switch_margin, s.threshold_mode, spacing)
        return {"trigger": "retrieval",
                "rule": RetrievalRule(library, s.top_k, s.temperature, s.metric, margin, s.weight_change)}
    if s.trigger == "evidence":
        return {"trigger": "evidence",
                "evidence": ShiftEvidence(library, s.evidence_threshold, run_window(s.ema_alpha, s.min_consecutive),
                                          s.flap_window_s, s.flap_penalty, s.flap_half_life_s, spacing)}
    return {"trigger": s.trigger}


class FusionDecider:
    """Decides for the fusions `runner` makes; `library` and `settings` give the current ones."""

    def __init__(self, runner: AdaptationRunner, requests: PendingRequest, *,
                 library: Callable[[], AdapterLibrary | None], settings: Callable[[], SegmenterSettings]):
        self._runner, self._requests, self._library, self._settings = runner, requests, library, settings
        self._debouncer = DomainShiftDebouncer(settings(), math.inf, trigger="distance")
        self._embedding: np.ndarray | None = None   # the newest embedding and its retrieval
        self._retrieval: Retrieval | None = None

    @property
    def debouncer(self) -> DomainShiftDebouncer:
        return self._debouncer

    @property
    def embedding(self) -> np.ndarray | None:
        return self._embedding

    @property
    def retrieval(self) -> Retrieval | None:
        return self._retrieval

    @property
    def threshold(self) -> float:
        return self._resolve(self._settings().switch_threshold)

    def _resolve(self, value: float) -> float:
        """A distance setting in absolute units (threshold_mode: as is, or times the median centroid spacing)."""
        lib = self._library()
        median = lib.median_inter_centroid_distance if lib is not None else math.nan
        if value == 0.0:
            return 0.0
        return resolve_threshold(value, self._settings().threshold_mode, median)

    @property
    def wants_embedding(self) -> bool:
        """A request waits for a first EMA: embed the next frame whatever the cadence."""
        return self._requests.pending and self._debouncer.ema is None

    def moving(self, decision: DebounceDecision) -> bool:
        """Whether the decision needs the next frames embedded (core/embedding_cadence.py): warm-up, no fusion
        yet, a request waiting, a shift being confirmed or just made, or per-image SemLA (every frame decides)."""
        return (decision.shift or decision.consecutive > 0 or decision.warming_up or decision.startup
                or self._debouncer.reference is None or self._requests.pending
                or self._settings().trigger == "frame")

    # ------------------------------------------------------------------ changes
    def configure(self) -> None:
        """Apply the current settings and library to the debouncer (its trigger rule and threshold)."""
        s, lib = self._settings(), self._library()
        self._debouncer.configure(s, self.threshold, **trigger_rules(s, lib))

    def library_changed(self) -> None:
        """A new library: the newest embedding's retrieval indexes the old one's rows."""
        self._embedding = self._retrieval = None
        self.configure()

    def restart(self) -> None:
        """Time ran backwards: the debouncer starts over (the active fusion stays)."""
        self._debouncer.restart()

    # ------------------------------------------------------------------ deciding
    def decide(self, embedding, stamp, now: float) -> DebounceDecision:
        """One embedding: debouncer update, retrieval, and the adaptation it asks for."""
        library, s, debouncer = self._library(), self._settings(), self._debouncer
        if library is None:
            raise RuntimeError("an embedding is decided on only with a library")
        self._embedding = np.asarray(embedding, dtype=np.float64)
        self._retrieval = retrieve(self._embedding, library.index, s.top_k, s.temperature, s.metric)
        decision = debouncer.update(embedding, now, candidates=self._retrieval.indices)
        if decision.consecutive > 0 and not decision.shift:   # a shift is being confirmed: read ahead
            self._runner.prefetch(library, self._retrieval.indices)
        # One adaptation per embedding; it also serves a pending request (taken when it starts, and
        # reported under the request's reason: a reload before the first fusion is "reload", not a
        # "startup" followed by a second swap; a manual request met by a shift is "manual").
        reason = None
        if decision.shift:
            reason = "shift"                         # the debouncer proposed it already
        elif self._requests.pending and not decision.warming_up:
            reason = "request"
        elif decision.startup and self._runner.active is None and not self._runner.adapting:
            reason = "startup"
        if reason is not None:
            if reason != "shift":
                debouncer.propose(decision.query, now)
            self._runner.start(decision.query, None if reason == "request" else reason, stamp)
        return decision

    def serve_request(self, stamp, now: float) -> None:
        """A request still pending is served now, for the current EMA, once warm-up is over."""
        debouncer = self._debouncer
        if self._requests.pending and not debouncer.warming_up and debouncer.ema is not None:
            query = debouncer.ema
            debouncer.propose(query, now)
            self._runner.start(query, None, stamp)   # the request is taken by the adaptation it starts

    def rollback(self, failed, active) -> None:
        """An attempt for `failed` failed; `active` is the query of the fusion still active."""
        self._debouncer.rollback(failed, active)

    def supports(self, embedding: np.ndarray | None = None, retrieval: Retrieval | None = None) -> Support:
        """The support numbers of the newest embedding (or of `embedding` and its `retrieval`, one a frame of a
        batch saw), for the library and for the fusion now active."""
        library, active = self._library(), self._runner.active
        e, r = (self._embedding, self._retrieval) if embedding is None else (embedding, retrieval)
        if e is None or r is None or library is None:
            return Support()
        entries = active.entries if active is not None else ()
        weights = active.weights if active is not None and entries else ()
        return frame_support(e, library, r, self._settings().metric, [entry.name for entry in entries], weights,
                             np.stack([entry.centroid for entry in entries]) if entries else None)
