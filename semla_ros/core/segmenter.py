"""SemlaSegmenter: the per-frame engine (navigator -> debouncer -> segment; navigator and adaptation off the hot path).

process() runs on ONE inference thread and never waits for the navigator or an adaptation. The
navigator embeds a due frame on its own worker while frames are segmented; its result updates the
debouncer at the embedded frame's time when it is ready (a frame arriving while the navigator is
busy is not embedded). Adaptation (retrieve, fuse, stage W_base + dW, text embeddings with the fused
text tower) runs on another worker. Replay and tests inject `InlineExecutor`, which runs both at
once, so an embedding and the adaptation it starts count for the frame itself and replay is
deterministic. A finished adaptation is swapped in right before a frame is segmented, so a frame
never sees half a model. Any failure leaves the previous model active and is reported as a
FusionEvent with ok=False, and a navigator failure costs no mask (FrameResult.navigator_error, counted;
the next due frame embeds again). Requests (`request_adaptation`, a reload) may come from any thread and
are taken by the adaptation that serves it (core/requests.py). The active fusion is one `ActiveFusion`
record; the debouncer owns the reference.

Time is the frame's (`time_s`, the header stamp in the node); it running backwards (a bag looping)
restarts the debouncer and drops embeddings still in flight from before the jump.
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np

from .debounce import DomainShiftDebouncer, resolve_threshold
from .evidence import ShiftEvidence
from .fusion import FusedWeights, WeightStager
from .library import AdapterLibrary
from .requests import PendingRequest, merged
from .retrieval import Retrieval, retrieve, support_score
from .settings import SegmenterSettings
from .support import Support, frame_support
from .trigger import RetrievalRule


class InlineExecutor(Executor):
    """Runs each submitted call at once on the caller's thread (replay, tests): an adaptation
    started for a frame is active for that same frame."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, like a worker thread would
            future.set_exception(exc)
        return future


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


@dataclass(frozen=True)
class ActiveFusion:
    """The fusion the model runs: what was announced, and enough to rebuild its weights."""

    event: FusionEvent
    entries: tuple = ()
    weights: tuple[float, ...] = ()
    query: np.ndarray | None = None


@dataclass
class FrameResult:
    class_ids: np.ndarray      # (H,W) int at input size
    classes: tuple[str, ...]   # the vocabulary the class ids index
    support: float             # eq. 15 (nan if not yet embedded)
    ema_distance: float        # nan in warm-up
    threshold: float           # absolute distance threshold (nan unless trigger is "distance")
    consecutive: int
    active_adapters: int
    embedded: bool             # a new embedding updated the debouncer on this frame
    fusion: FusionEvent | None  # a swap that became active (or failed) right before this frame
    model_ms: float
    # The embedding that reached the debouncer on this frame (None if none did) and the frame it was computed
    # from: with the navigator on its own thread that can be an earlier frame than this one.
    embedding: np.ndarray | None = None
    embedded_stamp: object = None        # the `stamp` passed with the embedded frame
    embedded_image: np.ndarray | None = None
    embedded_time_s: float = math.nan
    supports: Support = Support()
    time_s: float = math.nan   # the frame's time the debouncer used
    navigator_error: str | None = None   # the navigator failed on the frame collected now (reported once)
    retrieval: Retrieval | None = None   # the embedding's retrieval in the library (coverage reuses it)


@dataclass(frozen=True)
class _EmbeddingJob:
    """A frame handed to the navigator: its embedding is fed to the debouncer at the frame's time, unless
    time ran back (a new epoch) while it was in flight."""

    future: Future
    stamp: object
    time_s: float
    epoch: int
    image: np.ndarray


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


class SemlaSegmenter:
    """`backend` runs the network (None: the predictor's own PyTorch model); `executor` runs the
    navigator and adaptations (None: two private worker threads, so a fusion never delays an
    embedding); `clock` gives the time of frames processed without `time_s`."""

    def __init__(self, predictor, library: AdapterLibrary | None, navigator, settings: SegmenterSettings | None = None,
                 *, backend=None, executor: Executor | None = None, clock: Callable[[], float] = time.monotonic):
        self.predictor = predictor
        self.backend = backend
        self.navigator = navigator
        self._settings = settings or SegmenterSettings()
        self._clock = clock
        self._lock = threading.RLock()
        self._library: AdapterLibrary | None = None
        self._stager: WeightStager | None = None
        s = self._settings
        self._debouncer = DomainShiftDebouncer(s, math.inf, trigger="distance")
        self._own_executor = executor is None
        self._executor = executor if executor is not None else ThreadPoolExecutor(1, thread_name_prefix="semla-adapt")
        self._embed_executor = executor if executor is not None else ThreadPoolExecutor(
            1, thread_name_prefix="semla-navigator")
        self._embedding_job: _EmbeddingJob | None = None   # the frame being embedded
        self._embedded_frame: _EmbeddingJob | None = None  # the frame of the newest embedding
        self._embedding: np.ndarray | None = None  # the newest embedding and its retrieval
        self._retrieval: Retrieval | None = None
        self._epoch = 0                            # bumped when time runs backwards
        self._last_time = -math.inf
        self._time_resets = 0
        self._future: Future | None = None
        self._prefetching: Future | None = None
        self._queued: tuple | None = None     # (query, reason, stamp) waiting for the worker; the newest wins
        self._requests = PendingRequest()     # manual / reload, served by the next adaptation
        self._active: ActiveFusion | None = None
        self._swap_count = 0
        self._failed = 0
        self._frame = 0
        self._navigator_errors = 0
        self._navigator_error: str | None = None   # collected on this frame, not yet reported
        self._closed = False
        if library is not None and len(library) > 0:
            self._install_library(library)

    # ------------------------------------------------------------------ public state
    @property
    def active(self) -> FusionEvent | None:
        return None if self._active is None else self._active.event

    @property
    def swap_count(self) -> int:
        return self._swap_count

    @property
    def failed_fusions(self) -> int:
        return self._failed

    @property
    def navigator_errors(self) -> int:
        """Embeddings the navigator failed to make (each frame still got its mask)."""
        return self._navigator_errors

    @property
    def library(self) -> AdapterLibrary | None:
        return self._library

    @property
    def settings(self) -> SegmenterSettings:
        return self._settings

    @property
    def time_resets(self) -> int:
        """How often frame time ran backwards (a looping bag) and the debouncer started over."""
        return self._time_resets

    @property
    def threshold(self) -> float:
        return self._resolve(self._settings.switch_threshold)

    def _resolve(self, value: float) -> float:
        """A distance setting in absolute units (threshold_mode: as is, or times the median centroid spacing)."""
        lib = self._library
        median = lib.median_inter_centroid_distance if lib is not None else math.nan
        if value == 0.0:
            return 0.0
        return resolve_threshold(value, self._settings.threshold_mode, median)

    @property
    def adapting(self) -> bool:
        """An adaptation is running or waiting to be swapped in."""
        return self._future is not None or self._queued is not None

    # ------------------------------------------------------------------ control
    def update_settings(self, **changes) -> None:
        with self._lock:
            self._settings = self._settings.replace(**changes)
            self._configure_debouncer()
            if self._library is not None:
                self._library.cache.resize(self._settings.adapter_cache_mb)

    def request_adaptation(self, reason: str = "manual") -> None:
        """Adapt for the current EMA on the next frame that can (thread-safe; never lost once returned)."""
        self._requests.put(reason)

    def reload_library(self, root=None) -> tuple[int, list[tuple[str, str]]]:
        """Open the library again (or another root); the current one stays active on any failure.

        Reading and validating happen outside the frame lock, so inference goes on meanwhile.
        """
        current = self._library
        if root is None and current is None:
            raise ValueError("no library root to reload: pass one")
        if current is not None:
            new = current.reload(root)
        else:
            new = AdapterLibrary.open(root, navigator_dim=getattr(self.navigator, "dim", None),
                                      navigator_id=getattr(self.navigator, "id", None), model=self.predictor.model)
        if len(new) == 0:
            raise ValueError(f"library {new.root} has no usable entry (skipped: {new.skipped}); "
                             "keeping the current one")
        with self._lock:
            self._install_library(new)
            self._requests.put("reload")
        return len(new), new.skipped

    def set_classes(self, names: list[str]) -> None:
        """New vocabulary; its text embeddings are computed with the active (fused) text tower."""
        if isinstance(names, str) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError("class names must be a non-empty list of non-empty strings")
        with self._lock:
            self.predictor.set_classes(list(names))

    def fuse_now(self, entries, weights, reason: str = "manual", stamp=None) -> FusionEvent:
        """Make exactly this fusion active now (fixed fusions of the evaluation protocol; an empty list
        restores the base model), through the same stage + swap path as every other fusion."""
        with self._lock:
            start = time.perf_counter()
            if self._stager is None:
                raise ValueError("no library installed: nothing to fuse")
            try:
                staged = self._stage(list(entries), list(weights), None, [], reason, stamp, start)
            except Exception as exc:
                staged = self._failure(reason, stamp, start, exc, None)
            return self._swap(staged)

    def close(self) -> None:
        self._closed = True
        if self._own_executor:
            self._embed_executor.shutdown(wait=True, cancel_futures=True)
            self._executor.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ the frame
    def process(self, image_rgb: np.ndarray, stamp=None, time_s: float | None = None) -> FrameResult:
        """Segment one frame; `time_s` is its time in seconds (None: the clock's), `stamp` is handed
        back in the FusionEvent it triggers."""
        if self._closed:
            raise RuntimeError("segmenter is closed")
        now = float(self._clock() if time_s is None else time_s)
        if not math.isfinite(now):
            raise ValueError(f"frame time must be a finite number of seconds, got {time_s!r}")
        with self._lock:
            if now < self._last_time:   # a bag looped: old timers and in-flight embeddings mean nothing now
                self._debouncer.restart()
                self._epoch += 1
                self._time_resets += 1
            self._last_time = now
            embedded, decision = self._observe(image_rgb, stamp, now)
            fusion = self._swap_if_ready()
            classes = tuple(self.predictor.class_names)
            start = time.perf_counter()
            forward = self.backend.forward if self.backend is not None else None
            class_ids = self.predictor.predict(image_rgb, forward=forward).class_ids
            model_ms = (time.perf_counter() - start) * 1e3
            self._frame += 1
            active = self._active
            distance_rule = self._library is not None and self._settings.trigger == "distance"
            navigator_error, self._navigator_error = self._navigator_error, None
            return FrameResult(
                class_ids=class_ids, classes=classes,
                support=self._retrieval.support if self._retrieval is not None else math.nan,
                ema_distance=decision.ema_distance if decision is not None else math.nan,
                threshold=self.threshold if distance_rule else math.nan,
                consecutive=decision.consecutive if decision is not None else 0,
                active_adapters=len(active.entries) if active is not None else 0,
                embedded=embedded, fusion=fusion, model_ms=model_ms, supports=self._supports(), time_s=now,
                navigator_error=navigator_error,
                **(self._embedded_fields() if embedded else {}))

    # ------------------------------------------------------------------ internals
    def _install_library(self, library: AdapterLibrary) -> None:
        dim = getattr(self.navigator, "dim", None)
        if dim is not None and library.dim is not None and library.dim != dim:
            raise ValueError(f"library centroids have dimension {library.dim}, the navigator produces {dim}")
        if self._stager is None:
            self._stager = WeightStager(self.predictor.model, library.target_modules)
        else:
            self._stager.add_targets(library.target_modules)
        library.cache.resize(self._settings.adapter_cache_mb)
        self._library = library
        self._embedding = self._retrieval = None   # its rows index the old library
        self._configure_debouncer()

    def _configure_debouncer(self) -> None:
        s, lib = self._settings, self._library
        rule = evidence = None
        if s.trigger == "retrieval" and lib is not None:
            rule = RetrievalRule(lib, s.top_k, s.temperature, s.metric, self._resolve(s.switch_margin),
                                 s.weight_change)
        if s.trigger == "evidence" and lib is not None:
            window = max(s.min_consecutive, math.ceil((2.0 - s.ema_alpha) / s.ema_alpha))
            evidence = ShiftEvidence(lib, s.evidence_threshold, window, s.flap_window_s, s.flap_penalty,
                                     s.flap_half_life_s, lib.median_inter_centroid_distance)
        trigger = s.trigger if lib is not None else "distance"   # no library: nothing to retrieve from
        self._debouncer.configure(s, self.threshold, trigger=trigger, rule=rule, evidence=evidence)

    def _observe(self, image_rgb, stamp, now):
        """Start embedding this frame if due and the navigator is free; feed a finished embedding to the
        debouncer; start an adaptation when asked to."""
        library = self._library
        if library is None:
            return False, None
        if self.navigator is None:
            raise ValueError("a library needs a navigator to embed frames (none was given)")
        debouncer = self._debouncer
        decision = self._collect_embedding()   # finished since the last frame (a worker thread)
        due = self._frame % self._settings.embed_every_n == 0 or (self._requests.pending and debouncer.ema is None)
        if due and self._embedding_job is None:
            future = self._embed_executor.submit(self.navigator.embed, [image_rgb])
            self._embedding_job = _EmbeddingJob(future, stamp, now, self._epoch, image_rgb)
            decision = self._collect_embedding() or decision   # an inline executor has finished it already
        if self._requests.pending and not debouncer.warming_up and debouncer.ema is not None:
            query = debouncer.ema   # adapt for the current EMA now
            debouncer.propose(query, now)
            self._start_adaptation(query, None, stamp)   # the request is taken by the adaptation it starts
        return decision is not None, decision

    def _collect_embedding(self):
        """Feed the embedding in flight to the debouncer if it is ready (dropped if time ran back since)."""
        job = self._embedding_job
        if job is None or not job.future.done():
            return None
        self._embedding_job = None
        try:   # the mask never depends on the navigator: its error is counted and reported once, the next
            # due frame retries
            embedding = np.asarray(job.future.result()[0], dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(embedding)):
                raise ValueError("the navigator's embedding contains NaN or inf")
        except Exception as exc:
            self._navigator_errors += 1
            self._navigator_error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return None
        if job.epoch != self._epoch:
            return None
        self._embedded_frame = job
        return self._decide(embedding, job.stamp, job.time_s)

    def _embedded_fields(self) -> dict:
        """FrameResult's fields for the embedding that reached the debouncer on this frame."""
        job = self._embedded_frame
        if job is None:   # no embedding has reached the debouncer yet
            return dict(embedding=self._embedding, retrieval=self._retrieval)
        return dict(embedding=self._embedding, embedded_stamp=job.stamp, embedded_image=job.image,
                    embedded_time_s=job.time_s, retrieval=self._retrieval)

    def _decide(self, embedding, stamp, now):
        """One embedding: debouncer update, support, and the adaptation it asks for."""
        library, s, debouncer = self._library, self._settings, self._debouncer
        self._embedding = np.asarray(embedding, dtype=np.float64)
        self._retrieval = retrieve(self._embedding, library.index, s.top_k, s.temperature, s.metric)
        decision = debouncer.update(embedding, now, candidates=self._retrieval.indices)
        if decision.consecutive > 0 and not decision.shift:   # a shift is being confirmed: read ahead
            self._prefetch(library, self._retrieval.indices)
        # One adaptation per embedding; it also serves a pending request (taken when it starts, and
        # reported under the request's reason: a reload before the first fusion is "reload", not a
        # "startup" followed by a second swap; a manual request met by a shift is "manual").
        reason = None
        if decision.shift:
            reason = "shift"                         # the debouncer proposed it already
        elif self._requests.pending and not decision.warming_up:
            reason = "request"
        elif decision.startup and self._active is None and not self.adapting:
            reason = "startup"
        if reason is not None:
            if reason != "shift":
                debouncer.propose(decision.query, now)
            self._start_adaptation(decision.query, None if reason == "request" else reason, stamp)
        return decision

    def _supports(self) -> Support:
        """The support numbers of the newest embedding, for the library and for the fusion now active."""
        e, r, library, active = self._embedding, self._retrieval, self._library, self._active
        if e is None or r is None or library is None:
            return Support()
        entries = active.entries if active is not None else ()
        weights = active.weights if active is not None and entries else ()
        return frame_support(e, library, r, self._settings.metric, [entry.name for entry in entries], weights,
                             np.stack([entry.centroid for entry in entries]) if entries else None)

    def _prefetch(self, library: AdapterLibrary, rows) -> None:
        """A shift is being confirmed: read the adapters this frame retrieves into the library's cache
        on the adaptation worker, so the swap that follows does not wait for the disk."""
        if self._prefetching is None or self._prefetching.done():
            self._prefetching = self._executor.submit(library.prefetch, rows)

    def _start_adaptation(self, query, reason, stamp) -> None:
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

    def _adapt(self, query, reason, stamp) -> _Staged:
        """Retrieve + fuse + stage + text embeddings. Runs on the executor; touches no live state."""
        start = time.perf_counter()
        library, s = self._library, self._settings
        try:
            if library is None:
                raise RuntimeError("no adapter library")
            selection = library.select(query, s.top_k, s.temperature, s.metric, check=self._staging().check_adapter)
            r = selection.retrieval
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

    def _stage(self, entries, weights, query, distances, reason, stamp, start) -> _Staged:
        entries = [e.load() for e in entries]   # the active fusion holds its factors (no file is read again)
        fused = self._staging().stage_fusion(entries, weights)
        classes = tuple(self.predictor.class_names)
        text = self.predictor.text_embeddings(overrides=fused.parameter_overrides())
        event = FusionEvent(adapters=[e.name for e in entries], weights=[float(w) for w in weights],
                            distances=[float(d) for d in distances],
                            support=support_score(weights, distances) if len(distances) else math.nan,
                            reason=reason, duration_ms=0.0, swap_count=self._swap_count, stamp=stamp)
        return _Staged(event, None if query is None else np.asarray(query), fused, text, classes,
                       tuple(entries), tuple(float(w) for w in weights), (time.perf_counter() - start) * 1e3)

    def _failure(self, reason, stamp, start, exc, query) -> _Staged:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        event = FusionEvent(adapters=[], weights=[], distances=[], support=math.nan, reason=reason,
                            duration_ms=(time.perf_counter() - start) * 1e3, swap_count=self._swap_count,
                            ok=False, error=detail, stamp=stamp)
        return _Staged(event, None if query is None else np.asarray(query))

    def _swap_if_ready(self) -> FusionEvent | None:
        """Make a finished adaptation active (between frames), or report its failure."""
        if self._future is None or not self._future.done():
            return None
        staged, self._future = self._future.result(), None
        try:
            return self._swap(staged)
        finally:
            # only now: the next adaptation reuses the staging buffers this swap just copied
            if self._queued is not None:
                self._start_adaptation(*self._queued)

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
        self._debouncer.commit(staged.query)
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
        self._debouncer.rollback(staged.query)
        return staged.event
