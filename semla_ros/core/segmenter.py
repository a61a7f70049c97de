"""SemlaSegmenter: the per-frame engine (navigator -> debouncer -> segment; adaptation off the hot path).

process() runs on ONE inference thread. Adaptation (retrieve, fuse, stage W_base + dW, text
embeddings with the fused text tower) runs on the segmenter's worker thread, or inline when
`synchronous_adaptation=True` (tests, replay). A finished adaptation is swapped in at the
start of the next process() call, so a frame never sees half a model. Any failure leaves
the previous model active and is reported as a FusionEvent with ok=False.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .debounce import THRESHOLD_MODES, DomainShiftDebouncer, resolve_threshold
from .fusion import FusedWeights, WeightApplier
from .library import AdapterLibrary
from .retrieval import METRICS, retrieve, support_score

REASONS = ("startup", "shift", "manual", "reload")


@dataclass
class SegmenterSettings:
    """All live-updatable through update_settings()."""

    top_k: int = 5
    temperature: float = 0.05
    metric: str = "euclidean"
    ema_alpha: float = 0.1
    switch_threshold: float = 0.5
    threshold_mode: str = "relative"   # or "absolute"
    min_consecutive: int = 3
    cooldown_s: float = 5.0
    embed_every_n: int = 1
    warmup_frames: int = 1

    def validated(self) -> "SegmenterSettings":
        """Self, or ValueError naming the first bad value."""
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")

        def positive(name, allow_zero=False, upper=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v) \
                    or (v < 0 if allow_zero else v <= 0) or (upper is not None and v > upper):
                bound = ">= 0" if allow_zero else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}"
                                 f"{'' if upper is None else f' and <= {upper}'}, got {v!r}")

        integer("top_k", 1)
        positive("temperature")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        positive("ema_alpha", upper=1.0)
        positive("switch_threshold")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        integer("min_consecutive", 1)
        positive("cooldown_s", allow_zero=True)
        integer("embed_every_n", 1)
        integer("warmup_frames", 1)
        return self


@dataclass
class FusionEvent:
    adapters: list[str]
    weights: list[float]
    distances: list[float]
    support: float
    reason: str  # "startup" | "shift" | "manual" | "reload"
    duration_ms: float
    swap_count: int
    ok: bool = True
    error: str | None = None
    stamp: object = None   # opaque: the `stamp` passed to process() for the triggering frame


@dataclass
class FrameResult:
    class_ids: np.ndarray      # (H,W) int at input size
    support: float             # eq. 15 (nan if not yet embedded)
    ema_distance: float        # nan in warm-up
    threshold: float           # absolute threshold in use
    consecutive: int
    active_adapters: int
    embedded: bool
    fusion: FusionEvent | None  # a swap that became active (or failed) right before this frame
    model_ms: float


@dataclass
class _Staged:
    """An adaptation ready to swap in (or its failure)."""

    event: FusionEvent
    fused: FusedWeights | None = None
    text: object = None
    classes: tuple = ()
    query: np.ndarray | None = None
    recipe: tuple = ()                    # (entries, weights): enough to rebuild these weights
    adapt_ms: float = 0.0
    previous_query: np.ndarray | None = field(default=None)


class SemlaSegmenter:
    def __init__(self, predictor, library: AdapterLibrary | None, navigator, settings: SegmenterSettings | None = None,
                 backend=None, synchronous_adaptation: bool = False, clock: Callable[[], float] = time.monotonic):
        from ..backends.torch_backend import TorchBackend

        self.predictor = predictor
        self.backend = backend if backend is not None else TorchBackend(predictor)
        self.navigator = navigator
        self._settings = dataclasses.replace(settings or SegmenterSettings()).validated()
        self._clock = clock
        self._sync = bool(synchronous_adaptation)
        self._lock = threading.RLock()
        self._library: AdapterLibrary | None = None
        self._applier: WeightApplier | None = None
        self._debouncer = DomainShiftDebouncer(self._settings.ema_alpha, 1.0, self._settings.min_consecutive,
                                               self._settings.cooldown_s, self._settings.warmup_frames)
        self._executor = None if self._sync else ThreadPoolExecutor(1, thread_name_prefix="semla-adapt")
        self._future: Future | None = None
        self._queued: tuple | None = None     # (query, reason, stamp, previous_query) waiting for the worker
        self._ready: _Staged | None = None    # synchronous result to swap before this frame
        self._request: str | None = None      # manual / reload request for the next frame
        self._retry_after = -math.inf
        self._active: FusionEvent | None = None
        self._active_recipe: tuple = ()
        self._active_query: np.ndarray | None = None
        self._swap_count = 0
        self._failed = 0
        self._frame = 0
        self._support = math.nan
        self._closed = False
        if library is not None and len(library) > 0:
            self._install_library(library)

    # ------------------------------------------------------------------ public state
    @property
    def active(self) -> FusionEvent | None:
        return self._active

    @property
    def swap_count(self) -> int:
        return self._swap_count

    @property
    def failed_fusions(self) -> int:
        return self._failed

    @property
    def library(self) -> AdapterLibrary | None:
        return self._library

    @property
    def settings(self) -> SegmenterSettings:
        return dataclasses.replace(self._settings)

    @property
    def threshold(self) -> float:
        lib = self._library
        median = lib.median_inter_centroid_distance if lib is not None else math.nan
        return resolve_threshold(self._settings.switch_threshold, self._settings.threshold_mode, median)

    @property
    def adapting(self) -> bool:
        """An adaptation is running or waiting to be swapped in."""
        return self._future is not None or self._queued is not None or self._ready is not None

    # ------------------------------------------------------------------ control
    def update_settings(self, **changes) -> None:
        unknown = set(changes) - {f.name for f in dataclasses.fields(SegmenterSettings)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        with self._lock:
            new = dataclasses.replace(self._settings, **changes).validated()
            self._settings = new
            self._configure_debouncer()

    def request_adaptation(self, reason: str = "manual") -> None:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        self._request = reason

    def reload_library(self, root=None) -> tuple[int, list[tuple[str, str]]]:
        """Open the library again (or another root); the current one stays active on any failure.

        Reading and validating happen outside the frame lock, so inference goes on meanwhile.
        """
        current = self._library
        if root is None and current is None:
            raise ValueError("no library root to reload: pass one")
        new = AdapterLibrary.open(root if root is not None else current.root,
                                  navigator_dim=getattr(self.navigator, "dim", None),
                                  navigator_id=getattr(self.navigator, "id", None), model=self.predictor.model)
        if len(new) == 0:
            raise ValueError(f"library {new.root} has no usable entry (skipped: {new.skipped}); "
                             "keeping the current one")
        with self._lock:
            self._install_library(new)
            self._request = "reload"
        return len(new), new.skipped

    def set_classes(self, names: list[str]) -> None:
        """New vocabulary; its text embeddings are computed with the active (fused) text tower."""
        if isinstance(names, str) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError("class names must be a non-empty list of non-empty strings")
        with self._lock:
            self.predictor.set_classes(list(names))

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ the frame
    def process(self, image_rgb: np.ndarray, stamp=None) -> FrameResult:
        if self._closed:
            raise RuntimeError("segmenter is closed")
        with self._lock:
            fusion = self._swap_if_ready()
            embedded, decision = self._observe(image_rgb, stamp)
            if self._ready is not None:           # synchronous adaptation of this very frame
                fusion = self._swap_if_ready() or fusion
            start = time.perf_counter()
            class_ids, _ = self.backend.segment(image_rgb, self.predictor.text_embeddings())
            model_ms = (time.perf_counter() - start) * 1e3
            self._frame += 1
            active = self._active
            return FrameResult(
                class_ids=class_ids, support=self._support,
                ema_distance=decision.ema_distance if decision is not None else math.nan,
                threshold=self.threshold if self._library is not None else math.nan,
                consecutive=decision.consecutive if decision is not None else 0,
                active_adapters=len(active.adapters) if active is not None else 0,
                embedded=embedded, fusion=fusion, model_ms=model_ms)

    # ------------------------------------------------------------------ internals
    def _install_library(self, library: AdapterLibrary) -> None:
        dim = getattr(self.navigator, "dim", None)
        if self.navigator is None:
            raise ValueError("a library needs a navigator to embed frames")
        if dim is not None and library.dim is not None and library.dim != dim:
            raise ValueError(f"library centroids have dimension {library.dim}, the navigator produces {dim}")
        if self._applier is None:
            self._applier = WeightApplier(self.predictor.model, library.target_modules)
        else:
            self._applier.add_targets(library.target_modules)
        self._library = library
        self._configure_debouncer()

    def _configure_debouncer(self) -> None:
        s = self._settings
        threshold = self.threshold
        self._debouncer.configure(alpha=s.ema_alpha, threshold=threshold if math.isfinite(threshold) else 1e300,
                                  min_consecutive=s.min_consecutive, cooldown_s=s.cooldown_s,
                                  warmup_frames=s.warmup_frames)

    def _observe(self, image_rgb, stamp):
        """Embed this frame if due, update the debouncer and start an adaptation when asked to."""
        library = self._library
        if library is None:
            return False, None
        request = self._request
        if self._frame % self._settings.embed_every_n != 0 and not (request and self._debouncer.ema is None):
            if request is not None and not self._debouncer.warming_up:   # adapt for the current EMA now
                self._request = None
                query = self._debouncer.ema
                self._debouncer.set_reference(query, self._clock())
                self._start_adaptation(query, request, stamp, self._active_query)
            return False, None
        now = self._clock()
        embedding = self.navigator.embed([image_rgb])[0]
        decision = self._debouncer.update(embedding, now)
        s = self._settings
        r = retrieve(embedding, library.centroids, s.top_k, s.temperature, s.metric)
        self._support = support_score(r.weights, r.distances)
        # One adaptation per frame; it also serves a pending request (a reload before the first
        # fusion is reported as "reload", not as a "startup" followed by a second swap).
        reason = None
        if decision.shift:
            reason = "shift"
        elif request is not None and not decision.warming_up:
            reason = request
        elif decision.startup and self._active is None and not self.adapting and now >= self._retry_after:
            reason = "startup"
        if reason is not None:
            self._request = None
            query = decision.ema
            previous = self._active_query
            if reason != "shift":
                self._debouncer.set_reference(query, now)
            self._start_adaptation(query, reason, stamp, previous)
        return True, decision

    def _start_adaptation(self, query, reason, stamp, previous) -> None:
        if self._sync:
            self._ready = self._adapt(query, reason, stamp, previous)
        elif self._future is None:
            self._future = self._executor.submit(self._adapt, query, reason, stamp, previous)
        else:
            self._queued = (query, reason, stamp, previous)   # the newest request wins

    def _adapt(self, query, reason, stamp, previous) -> _Staged:
        """Retrieve + fuse + stage + text embeddings. Runs on the worker; touches no live state."""
        start = time.perf_counter()
        library, applier, s = self._library, self._applier, self._settings
        try:
            r = retrieve(query, library.centroids, s.top_k, s.temperature, s.metric)
            entries = [library.entries[i] for i in r.indices]
            fused = applier.stage_fusion(entries, r.weights)
            classes = tuple(self.predictor.class_names)
            text = self.predictor.text_embeddings(overrides=fused.parameter_overrides())
            event = FusionEvent(adapters=[e.name for e in entries], weights=[float(w) for w in r.weights],
                                distances=[float(d) for d in r.distances], support=r.support, reason=reason,
                                duration_ms=0.0, swap_count=self._swap_count, stamp=stamp)
            return _Staged(event, fused, text, classes, np.asarray(query), (entries, list(r.weights)),
                           (time.perf_counter() - start) * 1e3, previous)
        except Exception as exc:  # reported as a failed FusionEvent; the old model stays
            return self._failure(reason, stamp, start, exc, previous)

    def _failure(self, reason, stamp, start, exc, previous) -> _Staged:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        event = FusionEvent(adapters=[], weights=[], distances=[], support=math.nan, reason=reason,
                            duration_ms=(time.perf_counter() - start) * 1e3, swap_count=self._swap_count,
                            ok=False, error=detail, stamp=stamp)
        return _Staged(event, previous_query=previous)

    def _swap_if_ready(self) -> FusionEvent | None:
        """Make a finished adaptation active (between frames), or report its failure."""
        staged = self._ready
        self._ready = None
        if staged is None and self._future is not None and self._future.done():
            staged = self._future.result()
            self._future = None
        if staged is None:
            return None
        try:
            return self._swap(staged)
        finally:
            # only now: the next adaptation reuses the staging buffers this swap just copied
            if self._queued is not None and self._future is None and not self._sync:
                self._future = self._executor.submit(self._adapt, *self._queued)
                self._queued = None

    def _swap(self, staged: _Staged) -> FusionEvent:
        if staged.fused is None:
            return self._record_failure(staged)
        start = time.perf_counter()
        try:
            self.backend.update_weights(staged.fused.weights)
            if tuple(self.predictor.class_names) == staged.classes:
                self.predictor.set_text_embeddings(staged.text)
            else:                     # the vocabulary changed meanwhile: re-encode with the new weights
                self.predictor.invalidate_text_cache()
        except Exception as exc:
            self._restore_active()
            return self._record_failure(self._failure(staged.event.reason, staged.event.stamp, start, exc,
                                                      staged.previous_query))
        self._swap_count += 1
        event = dataclasses.replace(staged.event, swap_count=self._swap_count,
                                    duration_ms=staged.adapt_ms + (time.perf_counter() - start) * 1e3)
        self._active, self._active_recipe, self._active_query = event, staged.recipe, staged.query
        return event

    def _restore_active(self) -> None:
        """Rewrite the active fusion's weights after a swap failed half-way (they are rebuilt, not kept)."""
        if self._applier is not None:
            fused = self._applier.stage_fusion(*self._active_recipe) if self._active_recipe \
                else self._applier.base_weights()
            self.backend.update_weights(fused.weights)
        self.predictor.invalidate_text_cache()

    def _record_failure(self, staged: _Staged) -> FusionEvent:
        self._failed += 1
        # Retry later: back to the reference of the active fusion, after a cooldown.
        self._debouncer.set_reference(self._active_query)
        self._retry_after = self._clock() + self._settings.cooldown_s
        return staged.event
