"""The heavy steps of a relabelling job as units any runner schedules: embed a recording, segment a
cluster's frames with the cluster's fusion. They compute and return; the runner writes the results,
so a Ray worker only has to read the recording, and one process or many compute the same numbers
(batches are fixed index ranges / fixed slices of a cluster's frames, whoever runs them).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from ..core.retrieval import retrieve, scale_free_support
from ..core.support import frame_support as core_frame_support
from ..core.support import relative_distance
from .recording import Skipped


@dataclass
class EmbeddedBatch:
    """Frames with indices in [batch * batch_size, (batch + 1) * batch_size) that could be read, embedded."""

    recording: str
    batch: int
    indices: np.ndarray             # (n,) int64
    names: list[str]
    sec: np.ndarray                 # (n,) int64 header stamps
    nanosec: np.ndarray
    log_ns: np.ndarray
    frame_ids: list[str]
    labelled: np.ndarray            # (n,) bool: the recording has ground truth for the frame
    embeddings: np.ndarray          # (n, D) float32
    skipped: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Fusion:
    """One cluster's fusion: retrieval for the cluster centroid (the node's retrieval, SemLA eq. 13-15)."""

    adapters: tuple[str, ...]
    weights: tuple[float, ...]
    distances: tuple[float, ...]
    support: float
    scale_free_support: float

    def to_json(self) -> dict:
        return {"adapters": list(self.adapters), "weights": list(self.weights), "distances": list(self.distances),
                "support": self.support, "scale_free_support": self.scale_free_support}


def cluster_fusion(library, centroid, settings) -> Fusion:
    """Retrieve top-K adapters and weights for a cluster centroid; `settings` are SegmenterSettings."""
    r = retrieve(centroid, library.index, settings.top_k, settings.temperature, settings.metric)
    return Fusion(tuple(library.names[i] for i in r.indices), tuple(float(w) for w in r.weights),
                  tuple(float(d) for d in r.distances), r.support,
                  scale_free_support(r.weights, r.distances, library.median_inter_centroid_distance))


def frame_support(embedding, library, settings, fusion: Fusion) -> dict:
    """The SupportScore fields of one frame segmented with `fusion`: its own retrieval's support and
    top adapter, and the support of the cluster's fusion for this frame (eq. 15 with the fused
    adapters' weights and this frame's distances to them)."""
    r = retrieve(embedding, library.index, settings.top_k, settings.temperature, settings.metric)
    s = core_frame_support(embedding, library, r, settings.metric, fusion.adapters, fusion.weights)
    nearest, relative = relative_distance(embedding, library)
    return {"support_score": s.library, "scale_free_support": s.scale_free, "active_support": s.active,
            "active_scale_free_support": s.active_scale_free, "top_adapter": s.top_adapter,
            "active_is_top": s.active_is_top, "active_adapters": len(fusion.adapters), "ema_distance": math.nan,
            "switch_threshold": math.nan, "nearest_distance": nearest, "relative_distance": relative}


def embed_recording(navigator, recording, batch_size: int, done: Iterable[int] = ()) -> Iterator[EmbeddedBatch]:
    """Embed every readable frame, one batch per index range; batches in `done` are not read or embedded."""
    done = set(done)
    pending: list = []
    current = None

    def flush():
        frames = [f for f in pending if not isinstance(f, Skipped)]
        start = time.perf_counter()
        emb = navigator.embed([f.image for f in frames]) if frames else np.zeros((0, navigator.dim), np.float32)
        return EmbeddedBatch(
            recording=recording.name, batch=current, indices=np.array([f.index for f in frames], np.int64),
            names=[f.name for f in frames], sec=np.array([f.sec for f in frames], np.int64),
            nanosec=np.array([f.nanosec for f in frames], np.int64),
            log_ns=np.array([f.log_ns for f in frames], np.int64),
            frame_ids=[f.frame_id for f in frames], labelled=np.array([f.label is not None for f in frames], bool),
            embeddings=np.asarray(emb, np.float32),
            skipped=[(f.index, f.reason) for f in pending if isinstance(f, Skipped)],
            seconds=time.perf_counter() - start)

    for item in recording.frames(skip=lambda i: i // batch_size in done):
        batch = item.index // batch_size
        if current is not None and batch != current:
            yield flush()
            pending = []
        current = batch
        pending.append(item)
    if current is not None:
        yield flush()


def can_batch(backend) -> bool:
    """Whether frames may go through `predict_batch` (the predictor's own fp32 PyTorch model): only when the
    backend is that model; TensorRT and fp16 autocast run frame by frame through `backend.forward`."""
    return backend is None or (getattr(backend, "name", "") == "torch" and getattr(backend, "precision", "") == "fp32")


def predict_masks(predictor, backend, images: list[np.ndarray]) -> list[np.ndarray]:
    """Class ids of each image, batched where the backend allows (same-size images share a batch)."""
    if not can_batch(backend):
        return [predictor.predict(im, forward=backend.forward).class_ids for im in images]
    out: list = [None] * len(images)
    by_shape: dict = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for rows in by_shape.values():
        masks = predictor.predict_batch(np.stack([images[i] for i in rows]), batch_size=len(rows))
        for i, m in zip(rows, masks, strict=True):
            out[i] = m
    return out


def segment_batches(predictor, backend, recording, batches: list[tuple[int, ...]]) -> Iterator[tuple]:
    """(batch, [(index, name)], class ids, skipped) per batch of frame indices, reading the recording
    once; the model must already hold the cluster's fusion."""
    wanted = {i: b for b, batch in enumerate(batches) for i in batch}
    got: dict[int, list] = {b: [] for b in range(len(batches))}
    next_batch = 0

    def ready(b):
        return len(got[b]) == len(batches[b])

    for item in recording.frames(skip=lambda i: i not in wanted):
        b = wanted[item.index]
        got[b].append(item)
        while next_batch < len(batches) and ready(next_batch):
            yield _segment(predictor, backend, batches[next_batch], got.pop(next_batch))
            next_batch += 1
    while next_batch < len(batches):   # frames that were readable once and are not any more
        items = got.pop(next_batch)
        seen = {it.index for it in items}
        items += [Skipped(i, "frame no longer in the recording") for i in batches[next_batch] if i not in seen]
        yield _segment(predictor, backend, batches[next_batch], items)
        next_batch += 1


def _segment(predictor, backend, batch, items):
    frames = sorted((it for it in items if not isinstance(it, Skipped)), key=lambda f: f.index)
    skipped = [(it.index, it.reason) for it in items if isinstance(it, Skipped)]
    masks = predict_masks(predictor, backend, [f.image for f in frames]) if frames else []
    return batch, [(f.index, f.name) for f in frames], masks, skipped


def activate_fusion(segmenter, library, fusion: Fusion) -> float:
    """Make `fusion` the model's weights through the node's own path (`fuse_now`: stage, text embeddings
    with the fused text tower, swap); returns its duration in ms. A failed fusion raises."""
    event = segmenter.fuse_now([library[n] for n in fusion.adapters], list(fusion.weights))
    if not event.ok:
        raise RuntimeError(f"fusion of {list(fusion.adapters)} failed: {event.error}")
    return event.duration_ms
