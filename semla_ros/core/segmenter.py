"""SemlaSegmenter: the per-frame engine (navigator -> decider -> segment; navigator and adaptation off the hot path).

process() never waits for the navigator or an adaptation. It is a thin
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

Frames that arrive together (one per camera of a node) go through `process_batch`: each frame's decisions
(navigator hand-off, debouncer, requests) are made in order as `process` makes them, then a finished
adaptation is swapped in once, and the frames of one size go through the network in one forward (in forwards
of at most `backend.max_batch` where an engine's profile limits it; sliding-window frames one by one). Every
frame of a batch is segmented by the same model; an adaptation finishing after the swap waits for the next
batch. `process` is a batch of one.

Several inference workers (a node serving several cameras) share one segmenter through `decide_batch`: the
decisions and the swap are made one batch at a time, in call order, and the batch holds the model
(`ModelUse`) until its forward has run, so the forwards of different batches run side by side while a swap
or a new vocabulary waits for them.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..catseg.predictor import check_rgb_image, forward_batches
from .adaptation import ActiveFusion, AdaptationRunner, FusionEvent, FusionReason
from .debounce import DebounceDecision
from .decider import FusionDecider
from .embedding_scheduler import EmbeddingJob, EmbeddingScheduler
from .library import AdapterLibrary
from .model_use import ModelUse
from .requests import PendingRequest
from .retrieval import Retrieval
from .settings import SegmenterSettings
from .support import Support

__all__ = ["ActiveFusion", "DecidedBatch", "FrameResult", "FusionEvent", "FusionReason", "InlineExecutor",
           "SemlaSegmenter"]

log = logging.getLogger(__name__)


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
    fusion: FusionEvent | None  # a swap that became active (or failed) right before this frame (a batch's first)
    model_ms: float            # the network's time for the frames of its batch, all sizes (process: this frame's)
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
    batch: int = 1             # frames that went through the network in one forward with this one (itself included)


@dataclass(frozen=True)
class _Seen:
    """What a frame's decisions left for its result, before the batch's swap and forward."""

    time_s: float
    decision: DebounceDecision | None
    job: EmbeddingJob | None
    embedding: np.ndarray | None
    retrieval: Retrieval | None
    navigator_error: str | None


_NO_MASK = np.zeros((0, 0), dtype=np.int64)   # a decided frame's class ids until its forward ran


class DecidedBatch:
    """A batch whose decisions are made and whose model is held (`SemlaSegmenter.decide_batch`): `segment()`
    runs its forward and returns the frames' results; the model is let go after it, or by `close()`."""

    def __init__(self, segmenter: SemlaSegmenter, images, results: list[FrameResult], text, forward,
                 max_batch: int | None, model_use: ModelUse | None):
        self._segmenter, self._images, self._results, self._text = segmenter, images, results, text
        self._forward, self._max_batch = forward, max_batch   # the backend's forward (None: PyTorch), its limit
        self._model_use = model_use   # None: nothing held (an empty batch, or let go already)

    def segment(self) -> list[FrameResult]:
        """The forward (one per frame size) and the results, in the frames' order. Once."""
        if not self._results:
            self.close()
            return []
        if self._model_use is None:
            raise RuntimeError("this batch let its model go: decide it again")
        try:
            start = time.perf_counter()
            predictions = self._segmenter.predictor.predict_frames(self._images, self._text, forward=self._forward,
                                                                     max_batch=self._max_batch)
            model_ms = (time.perf_counter() - start) * 1e3
        finally:
            self.close()
        return [dataclasses.replace(result, class_ids=prediction.class_ids, model_ms=model_ms)
                for result, prediction in zip(self._results, predictions, strict=True)]

    def close(self) -> None:
        """Let the model go without a forward (idempotent; `segment` calls it)."""
        model_use, self._model_use = self._model_use, None
        if model_use is not None:
            model_use.unshare()


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
        self._dense = False         # embed_densely: the coverage monitor wants every embedding
        self._forwards = 0          # network calls made for frames
        self._batched_frames = 0    # frames segmented in a forward with other frames
        self._said_batching: set[str] = set()
        self._model_use = ModelUse()   # forwards of concurrent batches share the model; swaps wait for them
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

    def embed_densely(self, dense: bool) -> None:
        """While `dense`, the navigator keeps the dense cadence (embed_every_n) even where the decision is still:
        the coverage monitor sets it while its window holds an uncovered frame, since a gap's detection and its
        captures need every embedding they can get."""
        self._dense = bool(dense)

    def wait_embedding(self) -> None:
        """Block until the navigator's job in flight has finished: a benchmark charges a frame with the navigator
        work it started, where a worker thread would otherwise run it during whatever comes next."""
        self._embeddings.wait()

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
    def forwards(self) -> int:
        """Network calls made for frames (a batch of same-size frames is one)."""
        return self._forwards

    @property
    def forwards_in_flight(self) -> int:
        """Decided batches whose forward has not ended (several inference workers)."""
        return self._model_use.forwards

    @property
    def batched_frames(self) -> int:
        """Frames segmented in one forward together with other frames."""
        return self._batched_frames

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
        with self._lock, self._model_use.change():
            self.predictor.set_classes(list(names))

    def fuse_now(self, entries, weights, reason: str = "manual", stamp=None) -> FusionEvent:
        """Make exactly this fusion active now (fixed fusions of the evaluation protocol; an empty list
        restores the base model), through the same stage + swap path as every other fusion."""
        with self._lock, self._model_use.change():
            return self._adaptation.fuse_now(entries, weights, reason, stamp)

    def close(self) -> None:
        self._closed = True
        self._embeddings.close()
        self._adaptation.close()

    # ------------------------------------------------------------------ the frame
    def process(self, image_rgb: np.ndarray, stamp=None, time_s: float | None = None) -> FrameResult:
        """Segment one frame; `time_s` is its time in seconds (None: the clock's), `stamp` is handed
        back in the FusionEvent it triggers."""
        return self.process_batch([image_rgb], [stamp], [time_s])[0]

    def process_batch(self, images, stamps=None, times=None) -> list[FrameResult]:
        """Segment frames that arrived together (one per camera), in their order: each frame's decisions as
        `process` makes them, one swap for the batch, one forward per frame size. `stamps` and `times` (None,
        or one per frame, as `process`'s) go with the frames; one FrameResult per frame, in order. Every image
        and time is checked before anything changes."""
        return self.decide_batch(images, stamps, times).segment()

    def decide_batch(self, images, stamps=None, times=None) -> DecidedBatch:
        """`process_batch` in two steps, for several inference workers on one model: this one makes the frames'
        decisions and the batch's swap (one caller at a time, in call order) and holds the model for the batch;
        its `segment()` runs the forward, side by side with other batches' forwards, and lets the model go
        (`close()` lets it go without a forward). A swap or a new vocabulary waits for the forwards running."""
        if self._closed:
            raise RuntimeError("segmenter is closed")
        images = [check_rgb_image(image) for image in images]
        count = len(images)
        stamps = [None] * count if stamps is None else list(stamps)
        times = [None] * count if times is None else list(times)
        if len(stamps) != count or len(times) != count:
            raise ValueError(f"{count} images need as many stamps and times, got {len(stamps)} and {len(times)}")
        nows = [self._frame_time(time_s) for time_s in times]
        if count == 0:
            return DecidedBatch(self, [], [], None, None, None, None)
        with self._lock:
            seen = [self._see(image, stamp, now) for image, stamp, now in zip(images, stamps, nows, strict=True)]
            fusion = None
            if self._adaptation.finished:   # once, before the forward: one model for the whole batch
                with self._model_use.change():   # after the forwards in flight (other workers') end
                    fusion = self._adaptation.swap_if_ready()
            batches = self._forward_plan(images)
            self._forwards += len(batches)
            sizes = {i: len(batch) for batch in batches for i in batch}
            self._batched_frames += sum(1 for size in sizes.values() if size > 1)
            active, decider = self._adaptation.active, self._decider
            distance_rule = self._library is not None and self._settings.trigger == "distance"
            threshold = self.threshold if distance_rule else math.nan
            classes = tuple(self.predictor.class_names)
            results = []
            for i, frame in enumerate(seen):
                decision, job = frame.decision, frame.job
                embedded: dict[str, Any] = {} if job is None else dict(
                    embedding=frame.embedding, embedded_stamp=job.stamp, embedded_image=job.image,
                    embedded_time_s=job.time_s, retrieval=frame.retrieval)
                results.append(FrameResult(
                    class_ids=_NO_MASK, classes=classes,
                    support=frame.retrieval.support if frame.retrieval is not None else math.nan,
                    ema_distance=decision.ema_distance if decision is not None else math.nan,
                    threshold=threshold, consecutive=decision.consecutive if decision is not None else 0,
                    active_adapters=len(active.entries) if active is not None else 0,
                    embedded=job is not None, fusion=fusion if i == 0 else None, model_ms=math.nan,
                    supports=Support() if frame.embedding is None else decider.supports(frame.embedding,
                                                                                         frame.retrieval),
                    time_s=frame.time_s, navigator_error=frame.navigator_error, batch=sizes[i], **embedded))
            text = self.predictor.text_embeddings()   # the vocabulary the results name, for this model
            forward = self.backend.forward if self.backend is not None else None
            self._model_use.share()   # before the lock goes: no change comes between this swap and the forward
        return DecidedBatch(self, images, results, text, forward, self._max_batch(), self._model_use)

    # ------------------------------------------------------------------ internals
    def _install_library(self, library: AdapterLibrary) -> None:
        dim = getattr(self.navigator, "dim", None)
        if dim is not None and library.dim is not None and library.dim != dim:
            raise ValueError(f"library centroids have dimension {library.dim}, the navigator produces {dim}")
        self._adaptation.install(library)
        library.cache.resize(self._settings.adapter_cache_mb)
        self._library = library
        self._decider.library_changed()

    def _frame_time(self, time_s: float | None) -> float:
        now = float(self._clock() if time_s is None else time_s)
        if not math.isfinite(now):
            raise ValueError(f"frame time must be a finite number of seconds, got {time_s!r}")
        return now

    def _see(self, image_rgb, stamp, now: float) -> _Seen:
        """One frame's decisions, in order (the batch's swap and forward come after all of them)."""
        if self._embeddings.advance(now):   # a bag looped: old timers and in-flight embeddings mean nothing now
            self._decider.restart()
        decision, job = self._observe(image_rgb, stamp, now)
        self._embeddings.segmented()        # the next frame is one further in the embedding cadence
        decider = self._decider
        return _Seen(now, decision, job, decider.embedding, decider.retrieval, self._embeddings.take_error())

    def _max_batch(self) -> int | None:
        return getattr(self.backend, "max_batch", None)

    def _forward_plan(self, images: list[np.ndarray]) -> list[list[int]]:
        """The frames each network call takes (`predict_frames`' plan); a limit that splits a batch is said once."""
        if self.predictor.sliding_window:
            if len(images) > 1 and "sliding" not in self._said_batching:
                self._said_batching.add("sliding")
                log.info("sliding-window inference: frames that arrive together are segmented one by one "
                         "(five views each), not in one batched forward")
            return [[i] for i in range(len(images))]
        limit = self._max_batch()
        batches = forward_batches(images, limit)
        if limit is not None and len(forward_batches(images)) < len(batches) and "limit" not in self._said_batching:
            self._said_batching.add("limit")
            log.info("the %s engine takes at most %d views a forward: frames of one size that arrive together run "
                     "in forwards of up to %d", getattr(self.backend, "name", "backend"), limit, limit)
        return batches

    def _decide(self, found: tuple[np.ndarray, EmbeddingJob]) -> DebounceDecision:
        """One finished embedding to the decider; what it decided sets the embedding cadence."""
        decision = self._decider.decide(found[0], found[1].stamp, found[1].time_s)
        self._embeddings.cadence.settle(self._dense or self._decider.moving(decision))
        return decision

    def _observe(self, image_rgb, stamp, now) -> tuple[DebounceDecision | None, EmbeddingJob | None]:
        """Feed a finished embedding to the decider, hand this frame to the navigator if it is due, serve a
        pending request: the decision and frame of the embedding that reached the debouncer (None: none did)."""
        if self._library is None:
            return None, None
        embeddings, decider = self._embeddings, self._decider
        found = embeddings.collect()   # finished since the last frame (a worker thread)
        decision = None if found is None else self._decide(found)
        s = self._settings
        if embeddings.start_if_due(image_rgb, stamp, now, s.embed_every_n, s.embed_rest_every_n,
                                   urgent=decider.wants_embedding):
            finished = embeddings.collect()   # an inline executor has finished it already
            if finished is not None:
                found, decision = finished, self._decide(finished)
        decider.serve_request(stamp, now)
        return decision, None if found is None else found[1]
