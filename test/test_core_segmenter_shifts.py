"""SemlaSegmenter's time, navigator thread and support numbers, on demo-world frames (random demo engine).

- Frame time: the same frames with the same stamps replayed at 0.5x and 4x of real time give the same
  fusions (stamps, adapters, weights); timed by the wall clock instead (the node before) they do not.
- A stamp jumping backwards (a looping bag) restarts the debouncer: counted, the active fusion stays,
  the next domain is swapped to once.
- The navigator runs beside segmentation: frames are segmented while an embedding is in flight, and
  the embedding reaches the debouncer with its own frame's stamp.
- Support numbers: eq. 15 for the library and for the active fusion, scale-free versions, top-1.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from shift_setup import frames_of, random_demo_engine

from semla_ros.core.retrieval import retrieve, support_score
from semla_ros.core.segmenter import InlineExecutor, SemlaSegmenter
from semla_ros.core.settings import SegmenterSettings

DOMAINS = ("clear", "night", "fog")
DEFAULTS = SegmenterSettings()   # frozen: one shared default
# Time semantics are clearest with a rule that waits a dwell (the evidence default waits for evidence, not time)
DWELLING = DEFAULTS.replace(trigger="retrieval", cooldown_s=2.0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory, one_torch_thread):
    return random_demo_engine(tmp_path_factory.mktemp("lib"), DOMAINS)


@pytest.fixture(scope="module")
def clear_night_clear():
    return frames_of([("clear", 3), ("night", 4), ("clear", 4)])


def fusions(engine, frames, wall_pace: float, use_stamps: bool, settings=DEFAULTS):
    """Replay with the frames' stamps at 10 Hz and a wall clock running at `wall_pace` x real time."""
    predictor, library, navigator = engine
    wall = [0.0]
    seg = SemlaSegmenter(predictor, library, navigator, settings, executor=InlineExecutor(), clock=lambda: wall[0])
    out = []
    try:
        for i, (image, _) in enumerate(frames):
            wall[0] = i / 10.0 / wall_pace
            event = seg.process(image, stamp=i, time_s=i / 10.0 if use_stamps else None).fusion
            if event is not None:
                out.append((event.stamp, event.reason, tuple(event.adapters), tuple(np.round(event.weights, 9))))
    finally:
        seg.fuse_now([], [])
        seg.close()
    return out


@pytest.mark.slow
def test_replay_at_half_and_four_times_real_time_gives_the_same_swaps(engine, clear_night_clear):
    slow = fusions(engine, clear_night_clear, 0.5, use_stamps=True, settings=DWELLING)
    fast = fusions(engine, clear_night_clear, 4.0, use_stamps=True, settings=DWELLING)
    assert slow == fast
    assert [(e[1], e[2][0]) for e in slow] == [("startup", "demo-clear"), ("shift", "demo-night"),
                                                ("shift", "demo-clear")]
    dwell = round(SegmenterSettings().dwell_s * 10)                                  # frames at 10 Hz
    assert 30 + dwell <= slow[1][0] <= 30 + 30 and 70 + dwell <= slow[2][0] <= 70 + 30  # stamp time
    # Timed by the wall clock instead, the dwell and cooldown stretch with the replay rate: other swaps.
    assert fusions(engine, clear_night_clear, 0.5, use_stamps=False, settings=DWELLING) != \
        fusions(engine, clear_night_clear, 4.0, use_stamps=False, settings=DWELLING)
    # the evidence default: the same swaps at any replay rate too
    assert fusions(engine, clear_night_clear, 0.5, use_stamps=True) == \
        fusions(engine, clear_night_clear, 4.0, use_stamps=True)


def test_a_stamp_jumping_backwards_restarts_cleanly(engine, clear_night_clear):
    predictor, library, navigator = engine
    seg = SemlaSegmenter(predictor, library, navigator, DWELLING, executor=InlineExecutor())
    try:
        clear = [image for image, d in clear_night_clear[:30]]
        night = [image for image, d in clear_night_clear[30:70]]
        for i, image in enumerate(clear):
            seg.process(image, stamp=i, time_s=100.0 + i / 10.0)
        assert seg.active.adapters[0] == "demo-clear" and seg.swap_count == 1
        events = []
        for i, image in enumerate(night):               # the bag loops: time back to 100.0
            out = seg.process(image, stamp=100 + i, time_s=100.0 + i / 10.0)
            events += [out.fusion] if out.fusion is not None else []
        assert seg.time_resets == 1
        assert [(e.reason, e.adapters[0]) for e in events] == [("shift", "demo-night")]
        assert events[0].stamp >= 100 + round(SegmenterSettings().dwell_s * 10)   # the dwell restarted with the loop
    finally:
        seg.fuse_now([], [])
        seg.close()


class GatedNavigator:
    """The real navigator, held at a gate until the test opens it (an embedding that takes long)."""

    def __init__(self, inner):
        self.inner, self.dim, self.id = inner, inner.dim, inner.id
        self.gate = threading.Event()
        self.calls = 0

    def embed(self, images):
        self.calls += 1
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.embed(images)


def test_frames_are_segmented_while_the_navigator_works(engine, clear_night_clear):
    predictor, library, navigator = engine
    gated = GatedNavigator(navigator)
    seg = SemlaSegmenter(predictor, library, gated, SegmenterSettings(warmup_frames=1))   # worker threads
    images = [image for image, _ in clear_night_clear[:8]]
    try:
        first = seg.process(images[0], stamp="f0", time_s=0.0)
        assert not first.embedded and seg.active is None
        for i in (1, 2, 3):                                  # the navigator is busy: masks keep coming
            out = seg.process(images[i], stamp=f"f{i}", time_s=i / 10.0)
            assert out.class_ids.shape == images[i].shape[:2] and not out.embedded
        assert gated.calls == 1                              # frames that came while it was busy are not queued
        gated.gate.set()
        for i in range(4, 8):
            out = seg.process(images[i], stamp=f"f{i}", time_s=i / 10.0)
            if out.embedded:
                break
        assert out.embedded
        # the embedding that arrived belongs to frame 0, and the result says so (coverage and captures use it)
        assert out.embedded_stamp == "f0" and out.embedded_time_s == 0.0 and out.embedded_image is images[0]
        for _ in range(200):                                 # the startup fusion runs on the other worker
            if seg.active is not None:
                break
            threading.Event().wait(0.05)
            out = seg.process(images[0], stamp="later", time_s=1.0)
        assert seg.active is not None and seg.active.stamp == "f0"   # made for frame 0's embedding
    finally:
        gated.gate.set()
        seg.close()


def test_support_numbers_for_the_library_and_the_active_fusion(engine, clear_night_clear):
    predictor, library, navigator = engine
    s = SegmenterSettings(warmup_frames=1, top_k=2, temperature=1.0)   # a soft fusion: weights on both adapters
    seg = SemlaSegmenter(predictor, library, navigator, s, executor=InlineExecutor())
    spacing = library.median_inter_centroid_distance
    try:
        clear = clear_night_clear[0][0]
        out = seg.process(clear, time_s=0.0).supports
        e = navigator.embed([clear])[0]
        r = retrieve(e, library.centroids, 2, 1.0)
        assert out.top_adapter == library.names[r.indices[0]] == "demo-clear" and out.active_is_top
        assert out.library == pytest.approx(support_score(r.weights, r.distances))
        assert out.active == pytest.approx(out.library)      # the startup fusion was made for this embedding
        assert out.scale_free == pytest.approx(out.library * spacing)
        assert out.active_scale_free == pytest.approx(out.active * spacing)
        night = clear_night_clear[40][0]                     # before any swap: the clear fusion is active
        out = seg.process(night, time_s=0.1).supports
        assert out.top_adapter == "demo-night" and not out.active_is_top
        assert out.active < out.library                      # the fusion running is far from what is seen
        active = seg.active
        d = np.linalg.norm(np.stack([library[n].centroid for n in active.adapters]) - navigator.embed([night])[0],
                           axis=1)
        assert out.active == pytest.approx(support_score(active.weights, d))
    finally:
        seg.fuse_now([], [])
        seg.close()
    bare = SemlaSegmenter(predictor, None, None, executor=InlineExecutor())
    assert all(math.isnan(v) for v in (bare.process(clear).supports.library, bare.process(clear).supports.active))
    bare.close()
