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

METHODS = ("per-image", "per-cluster", "debounced")
PER_IMAGE = "per_image_masks"


def compare_recording(build, recording, folder, bar) -> dict:
    predictor, navigator, library, segmenter, backend = (build.predictor, build.navigator, build.library,
                                                         build.segmenter, build.backend)
    s = build.spec.settings
    classes = len(predictor.class_names)
    forward = backend.forward if backend is not None else None
    accs = {m: ConfusionAccumulator(classes) for m in METHODS}
    agree = {m: np.zeros(2, np.int64) for m in ("per-cluster", "debounced")}   # equal pixels, pixels
    seconds = dict.fromkeys(("per-image", "debounced"), 0.0)
    name = recording.name

    progress = bar(total=recording.count, desc=f"per-image {name}", unit="frame")
    frames = 0
    for frame in recording.frames():
        progress.update(1)
        if isinstance(frame, Skipped):
            continue
        start = time.perf_counter()
        r = retrieve(navigator.embed([frame.image])[0], library.centroids, s.top_k, s.temperature, s.metric)
        event = segmenter.fuse_now([library.entries[i] for i in r.indices], r.weights)
        if not event.ok:
            raise RuntimeError(f"per-image fusion failed on frame {frame.index}: {event.error}")
        mask = predictor.predict(frame.image, forward=forward).class_ids
        seconds["per-image"] += time.perf_counter() - start
        folder.save_mask(name, frame.name, mask, classes, PER_IMAGE)
        cluster_mask = folder.load_mask(name, frame.name)
        agree["per-cluster"] += (int((cluster_mask == mask).sum()), mask.size)
        if frame.label is not None:
            accs["per-image"].add(mask, frame.label)
            accs["per-cluster"].add(cluster_mask, frame.label)
        frames += 1
    progress.close()
    segmenter.fuse_now([], [])   # the replay's segmenter takes the weights it finds as its base

    clock = [0.0]
    replay = SemlaSegmenter(predictor, library, navigator, s, backend=backend, executor=InlineExecutor(),
                            clock=lambda: clock[0])
    progress = bar(total=recording.count, desc=f"debounced {name}", unit="frame")
    try:
        for frame in recording.frames():
            progress.update(1)
            if isinstance(frame, Skipped):
                continue
            clock[0] = (frame.stamp_ns or frame.log_ns) / 1e9
            start = time.perf_counter()
            mask = replay.process(frame.image, stamp=frame.index).class_ids
            seconds["debounced"] += time.perf_counter() - start
            agree["debounced"] += (int((folder.load_mask(name, frame.name, PER_IMAGE) == mask).sum()), mask.size)
            if frame.label is not None:
                accs["debounced"].add(mask, frame.label)
        swaps = replay.swap_count
    finally:
        progress.close()
        replay.close()
        segmenter.fuse_now([], [])
    labelled = accs["per-image"].images
    return {
        "frames": frames, "labelled_frames": labelled,
        "miou": {m: (accs[m].miou if labelled else None) for m in METHODS},
        "agreement_with_per_image": {"per-image": 1.0, **{m: float(v[0] / v[1]) if v[1] else None
                                                           for m, v in agree.items()}},
        "fusions": {"per-image": frames, "debounced": swaps},
        "seconds": seconds,
    }
