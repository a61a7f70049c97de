"""Per-image SemLA vs per-cluster fusion vs the node's debounced policy, on the same recorded frames.

- per-cluster: the job's masks (one fusion per cluster, retrieved for the cluster centroid);
- per-image: official SemLA: every frame embedded, its own top-K fused, segmented (a fusion per frame):
  the segmenter's `trigger: frame`;
- debounced: the node's policy (EMA, threshold, consecutive hits and cooldown decide when to re-fuse),
  like the evaluation protocol's "semla-debounced".
Both replay the frames at their header stamps through `evaluation.replay.SegmenterReplay`, the protocol's
own replay.
Every fusion goes through the node's path (`fuse_now` / `process`). Reported per method: pixel
agreement with per-image SemLA (what per-cluster fusion approximates), mIoU where the recording
has ground truth, fusions made, and compute seconds from frames to masks (embedding included; the
per-cluster figure comes from the job's own steps, see report.py). The per-image masks stay in
<rec>/per_image_masks/.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from ..evaluation.metrics import ConfusionAccumulator
from ..evaluation.replay import SegmenterReplay, per_image
from .recording import Skipped

METHODS = ("per-image", "per-cluster", "debounced")
PER_IMAGE = "per_image_masks"


@contextmanager
def replay_on(build, settings):
    """A `SegmenterReplay` on the build's model and backend; the build's own segmenter restores the base
    weights before it (the replay takes the weights it finds as its base) and after it."""
    build.segmenter.fuse_now([], [])
    replay = SegmenterReplay(build.predictor, build.library, build.navigator, settings, backend=build.backend)
    try:
        yield replay
    finally:
        replay.close()
        build.segmenter.fuse_now([], [])


def _seconds(frame) -> float:
    return (frame.stamp_ns or frame.log_ns) / 1e9


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

    settings, frames = build.spec.settings, 0
    with replay_on(build, per_image(settings)) as method:
        for frame in _readable(recording, bar, f"per-image {name}"):
            start = time.perf_counter()
            mask = method.process(frame.image, _seconds(frame), frame.index).class_ids
            seconds["per-image"] += time.perf_counter() - start
            folder.save_mask(name, frame.name, mask, classes, PER_IMAGE)
            cluster_mask = folder.load_mask(name, frame.name)
            agree["per-cluster"] += (int((cluster_mask == mask).sum()), mask.size)
            if frame.label is not None:
                accs["per-image"].add(mask, frame.label)
                accs["per-cluster"].add(cluster_mask, frame.label)
            frames += 1

    with replay_on(build, settings) as replay:
        for frame in _readable(recording, bar, f"debounced {name}"):
            start = time.perf_counter()
            mask = replay.process(frame.image, _seconds(frame), frame.index).class_ids
            seconds["debounced"] += time.perf_counter() - start
            agree["debounced"] += (int((folder.load_mask(name, frame.name, PER_IMAGE) == mask).sum()), mask.size)
            if frame.label is not None:
                accs["debounced"].add(mask, frame.label)
    labelled = accs["per-image"].images
    return {
        "frames": frames, "labelled_frames": labelled,
        "miou": {m: (accs[m].miou if labelled else None) for m in METHODS},
        "agreement_with_per_image": {"per-image": 1.0, **{m: float(v[0] / v[1]) if v[1] else None
                                                           for m, v in agree.items()}},
        "fusions": {"per-image": method.fusions, "debounced": replay.fusions},
        "seconds": seconds,
    }
