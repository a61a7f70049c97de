"""Per-image SemLA vs per-cluster fusion vs the node's debounced policy, on the same recorded frames.

- per-cluster: the job's masks (one fusion per cluster, retrieved for the cluster centroid);
- per-image: official SemLA: every frame embedded, its own top-K fused, segmented (a fusion per frame);
- debounced: the node's policy replayed: a fresh `SemlaSegmenter` with `InlineExecutor` and a clock
  from the frames' header stamps (EMA, threshold, consecutive hits and cooldown decide when to re-fuse),
  like the evaluation protocol's "semla-debounced".
Every fusion goes through the node's path (`fuse_now` / `process`). Reported per method: pixel
agreement with per-image SemLA (what per-cluster fusion approximates), mIoU where the recording
has ground truth, fusions made, and compute seconds from frames to masks (embedding included; the
per-cluster figure comes from the job's own steps, see report.py). The per-image masks stay in
<rec>/per_image_masks/.
"""
from __future__ import annotations

import time

import numpy as np

from ..core.retrieval import retrieve
from ..core.segmenter import InlineExecutor, SemlaSegmenter
from ..evaluation.metrics import ConfusionAccumulator
from .recording import Skipped
from .work import predict_masks

METHODS = ("per-image", "per-cluster", "debounced")
PER_IMAGE = "per_image_masks"


class PerImageSemla:
    """Official SemLA on one frame at a time: embed, retrieve its own top-K, fuse (the node's path), segment."""

    def __init__(self, build):
        self.build = build
        self.fusions = 0

    def process(self, image) -> np.ndarray:
        b, s = self.build, self.build.spec.settings
        r = retrieve(b.navigator.embed([image])[0], b.library.centroids, s.top_k, s.temperature, s.metric)
        event = b.segmenter.fuse_now([b.library.entries[i] for i in r.indices], r.weights)
        if not event.ok:
            raise RuntimeError(f"per-image fusion failed: {event.error}")
        self.fusions += 1
        return predict_masks(b.predictor, b.backend, [image])[0]

    def close(self) -> None:
        self.build.segmenter.fuse_now([], [])


class DebouncedReplay:
    """The node's policy on recorded frames: a fresh SemlaSegmenter (InlineExecutor) on the build's model,
    its clock the frames' own times."""

    def __init__(self, build):
        self.build = build
        build.segmenter.fuse_now([], [])   # the replay's segmenter takes the weights it finds as its base
        self._clock = [0.0]
        self.segmenter = SemlaSegmenter(build.predictor, build.library, build.navigator, build.spec.settings,
                                        backend=build.backend, executor=InlineExecutor(),
                                        clock=lambda: self._clock[0])

    @property
    def fusions(self) -> int:
        return self.segmenter.swap_count

    def process(self, image, seconds: float, stamp=None) -> np.ndarray:
        self._clock[0] = seconds
        return self.segmenter.process(image, stamp=stamp).class_ids

    def close(self) -> None:
        self.segmenter.close()
        self.build.segmenter.fuse_now([], [])


def _readable(recording, bar, desc):
    """The recording's readable frames, with a progress bar over all its messages."""
    progress = bar(total=recording.count, desc=desc, unit="frame")
    try:
        for frame in recording.frames():
            progress.update(1)
            if not isinstance(frame, Skipped):
                yield frame
    finally:
        progress.close()


def compare_recording(build, recording, folder, bar) -> dict:
    classes = len(build.predictor.class_names)
    accs = {m: ConfusionAccumulator(classes) for m in METHODS}
    agree = {m: np.zeros(2, np.int64) for m in ("per-cluster", "debounced")}   # equal pixels, pixels
    seconds = dict.fromkeys(("per-image", "debounced"), 0.0)
    name = recording.name

    method, frames = PerImageSemla(build), 0
    try:
        for frame in _readable(recording, bar, f"per-image {name}"):
            start = time.perf_counter()
            mask = method.process(frame.image)
            seconds["per-image"] += time.perf_counter() - start
            folder.save_mask(name, frame.name, mask, classes, PER_IMAGE)
            cluster_mask = folder.load_mask(name, frame.name)
            agree["per-cluster"] += (int((cluster_mask == mask).sum()), mask.size)
            if frame.label is not None:
                accs["per-image"].add(mask, frame.label)
                accs["per-cluster"].add(cluster_mask, frame.label)
            frames += 1
    finally:
        method.close()

    replay = DebouncedReplay(build)
    try:
        for frame in _readable(recording, bar, f"debounced {name}"):
            start = time.perf_counter()
            mask = replay.process(frame.image, (frame.stamp_ns or frame.log_ns) / 1e9, frame.index)
            seconds["debounced"] += time.perf_counter() - start
            agree["debounced"] += (int((folder.load_mask(name, frame.name, PER_IMAGE) == mask).sum()), mask.size)
            if frame.label is not None:
                accs["debounced"].add(mask, frame.label)
    finally:
        replay.close()
    labelled = accs["per-image"].images
    return {
        "frames": frames, "labelled_frames": labelled,
        "miou": {m: (accs[m].miou if labelled else None) for m in METHODS},
        "agreement_with_per_image": {"per-image": 1.0, **{m: float(v[0] / v[1]) if v[1] else None
                                                           for m, v in agree.items()}},
        "fusions": {"per-image": frames, "debounced": replay.fusions},
        "seconds": seconds,
    }
