"""AdaptationRunner: makes fusions and swaps them in, the one owner of the fusion the model runs.

An adaptation (retrieve, fuse, stage W_base + dW, text embeddings with the fused text tower) runs on
a worker and touches no live state; one runs at a time, and one asked for meanwhile waits for it (the
newest query wins). A finished one is swapped in between frames, so a frame never sees half a model.
Any failure leaves the previous model active and is reported as a FusionEvent with ok=False; a swap
that fails half-way rewrites the active fusion's weights. The active fusion is one `ActiveFusion`
record, its query held only here: the debouncer is handed it when an attempt fails (`rollback`).
Requests are taken by the adaptation that starts (core/requests.py), so they are served by it.
"""
from __future__ import annotations

import math
import time
import traceback
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np

from .fusion import FusedWeights, WeightStager
from .library import AdapterLibrary
from .recall import FusionRecall
from .requests import PendingRequest, merged
from .retrieval import distances, support_score
from .settings import SegmenterSettings

# Why a fusion was made: the first one, a confirmed domain shift, ~/adapt_now, ~/reload_library.
FusionReason = Literal["startup", "shift", "manual", "reload"]


@dataclass
class FusionEvent:
    adapters: list[str]
    weights: list[float]
    distances: list[float]
    support: float
    reason: FusionReason
    duration_ms: float
    swap_count: int
    ok: bool = True
    error: str | None = None
    stamp: object = None   # opaque: the `stamp` passed to process() for the triggering frame
    skipped: list = field(default_factory=list)   # (name, reason): entries found unusable, fused without
    recalled: bool = False  # a recent fusion made again (its text embeddings reused; core/recall.py)


@dataclass(frozen=True)
class ActiveFusion:
    """The fusion the model runs: what was announced, and enough to rebuild its weights."""

    event: FusionEvent
    entries: tuple = ()
    weights: tuple[float, ...] = ()
    query: np.ndarray | None = None


@dataclass
class _Staged:
    """An adaptation ready to swap in (fused is None: its failure)."""

    event: FusionEvent
    query: np.ndarray | None
    fused: FusedWeights | None = None
    text: object = None
    classes: tuple = ()
    entries: tuple = ()
    weights: tuple = ()
    adapt_ms: float = 0.0


# (the failed attempt's query, the active fusion's query): the debouncer's reference goes back
Rollback = Callable[[np.ndarray | None, np.ndarray | None], None]


class AdaptationRunner:
    """Runs the adaptations of `predictor` (and `backend`, which gets every weight swap) on `executor`
    (None: a private worker thread, shut down by `close`); `library` and `settings` give the current ones
    when an adaptation runs, `requests` is taken by the adaptation that starts, `rollback` is told of
    every failed attempt."""

    def __init__(self, predictor, backend, *, library: Callable[[], AdapterLibrary | None],
                 settings: Callable[[], SegmenterSettings], requests: PendingRequest, rollback: Rollback,
                 executor: Executor | None = None):
        self.predictor, self.backend = predictor, backend
        self._library, self._settings, self._requests, self._rollback = library, settings, requests, rollback
        self._own_executor = executor is None
        self._executor = executor if executor is not None else ThreadPoolExecutor(1, thread_name_prefix="semla-adapt")
        self._stager: WeightStager | None = None
        self._future: Future | None = None
        self._queued: tuple | None = None     # (query, reason, stamp) waiting for the worker; the newest wins
        self._prefetching: Future | None = None
        self._active: ActiveFusion | None = None
        self._swap_count = 0
        self._failed = 0
        self._recall = FusionRecall(settings().fusion_recall)

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> ActiveFusion | None:
        return self._active

    @property
    def active_query(self) -> np.ndarray | None:
        return None if self._active is None else self._active.query

    @property
    def swap_count(self) -> int:
        return self._swap_count

    @property
    def failed(self) -> int:
        return self._failed

    @property
    def adapting(self) -> bool:
        """An adaptation is running or waiting to be swapped in."""
        return self._future is not None or self._queued is not None

    def install(self, library: AdapterLibrary) -> None:
        """Stage the weights `library`'s adapters target too (the stager keeps the base weights of all)."""
        if self._stager is None:
            self._stager = WeightStager(self.predictor.model, library.target_modules)
        else:
            self._stager.add_targets(library.target_modules)
        self._recall.clear()   # its names are the old library's

    # ------------------------------------------------------------------ starting
    def start(self, query, reason, stamp) -> None:
        """Adapt for `query` now, or when the running adaptation is swapped in (the newest query wins; a
        request it takes, or a queued one took, is served by it and names its reason)."""
        reason = merged(reason, self._requests.take())
        if self._queued is not None:
            reason = merged(self._queued[1], reason)
        if self._future is None:
            self._queued = None
            self._future = self._executor.submit(self._adapt, query, reason, stamp)
        else:
            self._queued = (query, reason, stamp)

    def prefetch(self, library: AdapterLibrary, rows) -> None:
        """A shift is being confirmed: read the adapters this frame retrieves into the library's cache
        on the adaptation worker, so the swap that follows does not wait for the disk."""
        if self._prefetching is None or self._prefetching.done():
            self._prefetching = self._executor.submit(library.prefetch, rows)

    def fuse_now(self, entries, weights, reason: str = "manual", stamp=None) -> FusionEvent:
        """Make exactly this fusion active now (an empty list restores the base model), through the same
        stage + swap path as every other fusion."""
        start = time.perf_counter()
        if self._stager is None:
            raise ValueError("no library installed: nothing to fuse")
        try:
            staged = self._stage(list(entries), list(weights), None, [], reason, stamp, start)
        except Exception as exc:
            staged = self._failure(reason, stamp, start, exc, None)
        return self._swap(staged)

    # ------------------------------------------------------------------ on the worker
    def _adapt(self, query, reason, stamp) -> _Staged:
        """Retrieve + fuse + stage + text embeddings. Runs on the executor; touches no live state."""
        start = time.perf_counter()
        library, s = self._library(), self._settings()
        try:
            if library is None:
                raise RuntimeError("no adapter library")
            selection = library.select(query, s.top_k, s.temperature, s.metric, check=self._staging().check_adapter)
            r = selection.retrieval
            self._recall.resize(s.fusion_recall if s.trigger != "frame" else 0)   # per-image SemLA always fuses
            recalled = self._recall.find([e.name for e in selection.entries], r.weights,
                                         self.predictor.class_names, s.weight_change)
            if recalled is not None:
                entries = [library[name] for name in recalled.names]
                dist = distances(query, [e.centroid for e in entries], s.metric)
                staged = self._stage(entries, recalled.weights, query, dist, reason, stamp, start, recalled.text)
            else:
                staged = self._stage(list(selection.entries), r.weights, query, r.distances, reason, stamp, start)
            staged.event.skipped = list(selection.skipped)
            return staged
        except Exception as exc:  # reported as a failed FusionEvent; the old model stays
            return self._failure(reason, stamp, start, exc, query)

    def _staging(self) -> WeightStager:
        """The weight stager; there is one whenever a library is (a fusion without one is a bug, said so)."""
        if self._stager is None:
            raise RuntimeError("no weight stager: the segmenter has no adapter library")
        return self._stager

    def _stage(self, entries, weights, query, distances, reason, stamp, start, text=None) -> _Staged:
        """The one place a fusion of `entries` with `weights` is staged (fused weights, and text embeddings
        with its text tower unless a recalled fusion brings them), for a retrieval's selection and for
        `fuse_now` alike."""
        entries = [e.load() for e in entries]   # the active fusion holds its factors (no file is read again)
        fused = self._staging().stage_fusion(entries, weights)
        classes = tuple(self.predictor.class_names)
        recalled = text is not None
        if text is None:
            text = self.predictor.text_embeddings(overrides=fused.parameter_overrides())
        event = FusionEvent(adapters=[e.name for e in entries], weights=[float(w) for w in weights],
                            distances=[float(d) for d in distances],
                            support=support_score(weights, distances) if len(distances) else math.nan,
                            reason=reason, duration_ms=0.0, swap_count=self._swap_count, stamp=stamp,
                            recalled=recalled)
        return _Staged(event, None if query is None else np.asarray(query), fused, text, classes,
                       tuple(entries), tuple(float(w) for w in weights), (time.perf_counter() - start) * 1e3)

    def _failure(self, reason, stamp, start, exc, query) -> _Staged:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        event = FusionEvent(adapters=[], weights=[], distances=[], support=math.nan, reason=reason,
                            duration_ms=(time.perf_counter() - start) * 1e3, swap_count=self._swap_count,
                            ok=False, error=detail, stamp=stamp)
        return _Staged(event, None if query is None else np.asarray(query))

    # ------------------------------------------------------------------ between frames
    @property
    def finished(self) -> bool:
        """An adaptation has finished and waits for `swap_if_ready` (the model changes on that call)."""
        return self._future is not None and self._future.done()

    def swap_if_ready(self) -> FusionEvent | None:
        """Make a finished adaptation active (between frames), or report its failure."""
        if self._future is None or not self._future.done():
            return None
        staged, self._future = self._future.result(), None
        try:
            return self._swap(staged)
        finally:
            # only now: the next adaptation reuses the staging buffers this swap just copied
            if self._queued is not None:
                self.start(*self._queued)

    def _write(self, fused: FusedWeights, text=None, classes=()) -> None:
        self.predictor.load_weights(fused.weights, text, classes)
        if self.backend is not None:
            self.backend.update_weights(fused.weights)

    def _swap(self, staged: _Staged) -> FusionEvent:
        if staged.fused is None:
            return self._record_failure(staged)
        start = time.perf_counter()
        try:
            self._write(staged.fused, staged.text, staged.classes)
        except Exception as exc:
            self._restore_active()
            return self._record_failure(self._failure(staged.event.reason, staged.event.stamp, start, exc,
                                                      staged.query))
        self._swap_count += 1
        event = replace(staged.event, swap_count=self._swap_count,
                        duration_ms=staged.adapt_ms + (time.perf_counter() - start) * 1e3)
        self._active = ActiveFusion(event, staged.entries, staged.weights, staged.query)
        if staged.query is not None and not event.recalled:   # a retrieval's fusion (fuse_now's are fixed ones)
            self._recall.put(event.adapters, event.weights, staged.classes, staged.text)
        return event

    def _restore_active(self) -> None:
        """Rewrite the active fusion's weights after a swap failed half-way (they are rebuilt, not kept)."""
        active = self._active
        stager = self._staging()
        if active is not None and active.entries:
            self._write(stager.stage_fusion(active.entries, active.weights))
        else:
            self._write(stager.base_weights())

    def _record_failure(self, staged: _Staged) -> FusionEvent:
        self._failed += 1
        self._rollback(staged.query, self.active_query)
        return staged.event

    def close(self) -> None:
        if self._own_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
