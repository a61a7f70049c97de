"""SemlaSegmenter: the per-frame engine (navigator -> decider -> segment; navigator and adaptation off the hot path).

process() runs on ONE inference thread and never waits for the navigator or an adaptation. It is a thin
facade over three parts, each the one owner of its state:

- `EmbeddingScheduler` (core/embedding_scheduler.py): which frame the navigator embeds on its own worker,
  the job in flight, epochs when time runs backwards, navigator errors (counted, reported once; a mask
  never depends on the navigator);
- `FusionDecider` (core/decider.py): each embedding's debouncer update and retrieval, and when to fuse
  for what (a shift, a request, the startup fusion);
- `AdaptationRunner` (core/adaptation.py): the adaptations on another worker, the swap between frames,
  rollback and failure events, and the active fusion (`ActiveFusion`, its query held only there).

The segmenter holds the library and the settings (the parts read them through it), and the vocabulary.
Replay and tests inject `InlineExecutor`, which runs both workers' calls at once, so an embedding and the
adaptation it starts count for the frame itself and replay is deterministic. Requests (`request_adaptation`,
a reload) may come from any thread and are taken by the adaptation that serves it (core/requests.py).

Time is the frame's (`time_s`, the header stamp in the node); it running backwards (a bag looping)
restarts the debouncer and drops embeddings still in flight from before the jump.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .adaptation import ActiveFusion, AdaptationRunner, FusionEvent, FusionReason
from .debounce import DebounceDecision
from .decider import FusionDecider
from .embedding_scheduler import EmbeddingJob, EmbeddingScheduler
from .library import AdapterLibrary
from .requests import PendingRequest
from .retrieval import Retrieval
from .settings import SegmenterSettings
from .support import Support

__all__ = ["ActiveFusion", "FrameResult", "FusionEvent", "FusionReason", "InlineExecutor", "SemlaSegmenter"]


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


class SemlaSegmenter:
    """`backend` runs the network (None: the predictor's own PyTorch model); `executor` runs the
    navigator and adaptations (None: two private worker threads, so a fusion never delays an
    embedding); `clock` gives the time of frames processed without `time_s`."""

    def __init__(self, predictor, library: AdapterLibrary | None, navigator, settings: SegmenterSettings | None = None,
                 *, backend=None, executor: Executor | None = None, clock: Callable[[], float] = time.monotonic):
        self._settings = settings or SegmenterSettings()
        self._clock = clock
        self._lock = threading.RLock()
        self._library: AdapterLibrary | None = None
        requests = self._requests = PendingRequest()     # manual / reload, served by the next adaptation
        self._embeddings = EmbeddingScheduler(navigator, executor)
        self._adaptation = AdaptationRunner(
            predictor, backend, library=lambda: self._library, settings=lambda: self._settings, requests=requests,
            rollback=lambda failed, active: self._decider.rollback(failed, active), executor=executor)
        self._decider = FusionDecider(self._adaptation, requests, library=lambda: self._library,
                                      settings=lambda: self._settings)
        self._closed = False
        if library is not None and len(library) > 0:
            self._install_library(library)

    # ------------------------------------------------------------------ public state
    @property
    def predictor(self):
        return self._adaptation.predictor

    @property
    def backend(self):
        return self._adaptation.backend

    @property
    def navigator(self):
        return self._embeddings.navigator

    @navigator.setter
    def navigator(self, navigator) -> None:
        self._embeddings.navigator = navigator

    @property
    def active(self) -> FusionEvent | None:
        active = self._adaptation.active
        return None if active is None else active.event

    @property
    def swap_count(self) -> int:
        return self._adaptation.swap_count

    @property
    def failed_fusions(self) -> int:
        return self._adaptation.failed

    @property
    def navigator_errors(self) -> int:
        """Embeddings the navigator failed to make (each frame still got its mask)."""
        return self._embeddings.errors

    @property
    def library(self) -> AdapterLibrary | None:
        return self._library

    @property
    def settings(self) -> SegmenterSettings:
        return self._settings

    @property
    def time_resets(self) -> int:
        """How often frame time ran backwards (a looping bag) and the debouncer started over."""
        return self._embeddings.time_resets

    @property
    def threshold(self) -> float:
        return self._decider.threshold

    @property
    def adapting(self) -> bool:
        """An adaptation is running or waiting to be swapped in."""
        return self._adaptation.adapting

    # ------------------------------------------------------------------ control
    def update_settings(self, **changes) -> None:
        with self._lock:
            self._settings = self._settings.replace(**changes)
            self._decider.configure()
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
            return self._adaptation.fuse_now(entries, weights, reason, stamp)

    def close(self) -> None:
        self._closed = True
        self._embeddings.close()
        self._adaptation.close()

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
            if self._embeddings.advance(now):   # a bag looped: old timers and in-flight embeddings mean nothing now
                self._decider.restart()
            decision, job = self._observe(image_rgb, stamp, now)
            fusion = self._adaptation.swap_if_ready()
            classes = tuple(self.predictor.class_names)
            start = time.perf_counter()
            forward = self.backend.forward if self.backend is not None else None
            class_ids = self.predictor.predict(image_rgb, forward=forward).class_ids
            model_ms = (time.perf_counter() - start) * 1e3
            self._embeddings.segmented()
            active, decider = self._adaptation.active, self._decider
            distance_rule = self._library is not None and self._settings.trigger == "distance"
            embedded: dict[str, Any] = {} if job is None else dict(
                embedding=decider.embedding, embedded_stamp=job.stamp, embedded_image=job.image,
                embedded_time_s=job.time_s, retrieval=decider.retrieval)
            return FrameResult(
                class_ids=class_ids, classes=classes,
                support=decider.retrieval.support if decider.retrieval is not None else math.nan,
                ema_distance=decision.ema_distance if decision is not None else math.nan,
                threshold=self.threshold if distance_rule else math.nan,
                consecutive=decision.consecutive if decision is not None else 0,
                active_adapters=len(active.entries) if active is not None else 0,
                embedded=job is not None, fusion=fusion, model_ms=model_ms, supports=decider.supports(),
                time_s=now, navigator_error=self._embeddings.take_error(), **embedded)

    # ------------------------------------------------------------------ internals
    def _install_library(self, library: AdapterLibrary) -> None:
        dim = getattr(self.navigator, "dim", None)
        if dim is not None and library.dim is not None and library.dim != dim:
            raise ValueError(f"library centroids have dimension {library.dim}, the navigator produces {dim}")
        self._adaptation.install(library)
        library.cache.resize(self._settings.adapter_cache_mb)
        self._library = library
        self._decider.library_changed()

    def _observe(self, image_rgb, stamp, now) -> tuple[DebounceDecision | None, EmbeddingJob | None]:
        """Feed a finished embedding to the decider, hand this frame to the navigator if it is due, serve a
        pending request: the decision and frame of the embedding that reached the debouncer (None: none did)."""
        if self._library is None:
            return None, None
        embeddings, decider = self._embeddings, self._decider
        found = embeddings.collect()   # finished since the last frame (a worker thread)
        decision = None if found is None else decider.decide(found[0], found[1].stamp, found[1].time_s)
        if embeddings.start_if_due(image_rgb, stamp, now, self._settings.embed_every_n, decider.wants_embedding):
            finished = embeddings.collect()   # an inline executor has finished it already
            if finished is not None:
                found, decision = finished, decider.decide(finished[0], finished[1].stamp, finished[1].time_s)
        decider.serve_request(stamp, now)
        return decision, None if found is None else found[1]
