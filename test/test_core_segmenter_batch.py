"""SemlaSegmenter.process_batch: frames that arrive together (several cameras) are decided one by one, as
`process` decides them, swapped once and segmented in one forward per frame size; and the predictor's
batched path (`predict_frames`) makes each frame's mask as `predict` does.

Masks of a batched forward are compared with `assert_mask`: the same class at every pixel, except where the
single-frame probabilities of the two best classes are within NEAR_TIE. CPU kernels are not batch-invariant
(oneDNN's convolution picks its algorithm by batch size; the first difference, ~2e-6, is at the aggregator's
guidance projection, and matmuls differ too with oneDNN off), so a near-tie may go either way; every other
field of a result is compared exactly. A batch of one is `process` bit for bit."""
import dataclasses
import itertools
import math
from concurrent.futures import Executor, Future

import numpy as np
import pytest
import torch
from test_core_segmenter import (
    CLASSES,
    MeanColorNavigator,
    frame,
    make_library,
    make_segmenter,
    reference_model,
    tiny_targets,  # noqa: F401  (a fixture)
)
from test_core_segmenter_races import FailingNavigator

from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.predictor import CatSegPredictor, forward_batches
from semla_ros.core.library import AdapterLibrary
from semla_ros.core.segmenter import InlineExecutor, SemlaSegmenter
from semla_ros.core.settings import SegmenterSettings

SMALL = (40, 56)   # a second camera's frame size


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_targets):  # noqa: F811  (tiny_targets: the imported fixture)
    return AdapterLibrary.open(make_library(tmp_path_factory.mktemp("lib"), tiny_targets), navigator_dim=3)


class CountingBackend:
    """The predictor's own model as a backend, counting the views of every forward; `during` runs inside the
    first forward (an adaptation finishing while the network runs)."""

    name = "counting"

    def __init__(self, predictor, max_batch=None):
        self.predictor, self.max_batch, self.calls, self.during = predictor, max_batch, [], None

    def forward(self, views, text):
        self.calls.append(int(views.shape[0]))
        if self.during is not None:
            self.during, during = None, self.during
            during()
        return self.predictor.forward(views, text)

    def update_weights(self, fused):
        return None


class HeldAdaptations(Executor):
    """Runs the navigator at once; holds every other call (adaptations, read-ahead) until `finish()`."""

    def __init__(self):
        self.held = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if getattr(fn, "__name__", "") == "embed":
            return InlineExecutor().submit(fn, *args, **kwargs)
        future: Future = Future()
        self.held.append((future, fn, args, kwargs))
        return future

    def finish(self) -> None:
        held, self.held = self.held, []
        for future, fn, args, kwargs in held:
            future.set_result(fn(*args, **kwargs))


def segmenter_with(library, executor, backend_limit=None, **settings):
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES)
    s = SegmenterSettings(**({"threshold_mode": "absolute", "switch_threshold": 1.0, "cooldown_s": 0.0,
                              "ema_alpha": 0.5, "min_consecutive": 2, "top_k": 2, "trigger": "distance",
                              "dwell_s": 0.0, "warmup_frames": 1, "embed_rest_every_n": 1} | settings))
    backend = CountingBackend(predictor, backend_limit)
    ticks = itertools.count()
    return SemlaSegmenter(predictor, library, MeanColorNavigator(), s, backend=backend, executor=executor,
                          clock=lambda: float(next(ticks)))


def comparable(result):
    """A FrameResult's content, less the timings and batch size (which say how it was run)."""
    values = dataclasses.asdict(result)
    for key in ("model_ms", "batch"):
        values.pop(key)
    if values["fusion"] is not None:
        values["fusion"].pop("duration_ms")
    return values


def assert_equal(x, y, where="result"):
    if isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), where
        for key in x:
            assert_equal(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)) and not isinstance(x, str):
        assert isinstance(y, (list, tuple)) and len(x) == len(y), where
        for i, (a, b) in enumerate(zip(x, y, strict=True)):
            assert_equal(a, b, f"{where}[{i}]")
    elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        np.testing.assert_array_equal(x, y, err_msg=where)
    elif isinstance(x, float) and math.isnan(x):
        assert isinstance(y, float) and math.isnan(y), where
    else:
        assert x == y, where


NEAR_TIE = 1e-4


def assert_mask(class_ids, expected):
    """`class_ids` (a batched forward's) are `expected`'s (a Prediction of the frame alone), but at near-ties."""
    top2 = expected.probs.topk(2, dim=0).values
    tie = (top2[0] - top2[1] < NEAR_TIE).cpu().numpy()
    differ = np.asarray(class_ids) != expected.class_ids
    assert not (differ & ~tie).any(), f"{int((differ & ~tie).sum())} pixels differ beyond a near-tie"
    assert differ.mean() < 0.01


def assert_same(a, b, expected=None):
    """Every field of two FrameResults; with `expected` (the frame's Prediction alone) the masks by assert_mask."""
    left, right = comparable(a), comparable(b)
    if expected is not None:
        assert_mask(left.pop("class_ids"), expected)
        right.pop("class_ids")
    assert_equal(left, right)


def test_predict_frames_is_predict_for_each_frame_with_one_forward_per_size():
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES)
    images = [frame("red", 1), frame("blue", 2, SMALL), frame("green", 3), frame("red", 4, SMALL), frame("blue", 5)]
    calls = []

    def forward(views, text):
        calls.append(int(views.shape[0]))
        return predictor.forward(views, text)

    batched = predictor.predict_frames(images, forward=forward)
    assert calls == [3, 2]   # the three 48x64 frames, then the two 40x56 ones
    for image, prediction in zip(images, batched, strict=True):
        single = predictor.predict(image)
        assert_mask(prediction.class_ids, single)
        torch.testing.assert_close(prediction.probs, single.probs, rtol=0, atol=1e-5)
    one = predictor.predict_frames(images[:1])[0]   # a batch of one is predict exactly
    assert torch.equal(one.probs, predictor.predict(images[0]).probs)
    calls.clear()
    limited = predictor.predict_frames(images, forward=forward, max_batch=2)
    assert calls == [2, 1, 2]
    for image, prediction in zip(images, limited, strict=True):
        assert_mask(prediction.class_ids, predictor.predict(image))
    assert forward_batches(images, 2) == [[0, 2], [4], [1, 3]] and forward_batches([]) == []
    with pytest.raises(ValueError, match="max_batch"):
        forward_batches(images, 0)


def test_a_batch_of_one_is_process(library):
    one, batch = make_segmenter(library), make_segmenter(library)
    for i, domain in enumerate(["red", "red", "blue", "blue", "blue", "blue"]):
        image = frame(domain, i)
        assert_same(one.process(image, stamp=i), batch.process_batch([image], [i])[0])
    assert one.swap_count == batch.swap_count == 2
    one.close()
    batch.close()


def test_batched_frames_get_what_process_gives_each_with_the_same_fusion(library):
    """Steady frames of two cameras (two sizes): every field of every result is process's, with one forward
    per size and batch."""
    one, batch = make_segmenter(library), segmenter_with(library, InlineExecutor())
    first = frame("red", 0)
    assert_same(one.process(first, stamp="s0", time_s=0.0), batch.process_batch([first], ["s0"], [0.0])[0])
    backend = batch.backend
    backend.calls.clear()
    for turn in range(3):
        images = [frame("red", 10 + turn), frame("red", 20 + turn, SMALL), frame("red", 30 + turn)]
        stamps = [f"a{turn}", f"b{turn}", f"c{turn}"]
        times = [1.0 + turn, 1.2 + turn, 1.5 + turn]
        results = batch.process_batch(images, stamps, times)
        for image, stamp, time_s, result in zip(images, stamps, times, results, strict=True):
            expected = one.process(image, stamp=stamp, time_s=time_s)
            assert_same(expected, result, one.predictor.predict(image))   # same fusion: the mask is process's
            assert result.time_s == time_s and result.embedded_stamp == stamp   # embed_every_n 1: its own frame
        assert [r.batch for r in results] == [2, 1, 2]
    assert backend.calls == [2, 1] * 3
    assert batch.forwards == 1 + 6 and batch.batched_frames == 2 * 3
    assert one.swap_count == batch.swap_count == 1
    one.close()
    batch.close()


def test_one_swap_per_batch_before_its_forward_and_a_later_one_before_the_next_batch(library):
    executor = HeldAdaptations()
    seg = segmenter_with(library, executor)
    torch.manual_seed(0)
    base = CatSegPredictor(build_catseg("tiny"), CLASSES)
    red = [frame("red", i) for i in range(3)]

    # The startup adaptation is asked for by the first frame and still running: the batch runs the base model.
    results = seg.process_batch(red, ["r0", "r1", "r2"], [0.0, 0.1, 0.2])
    assert all(r.fusion is None and r.active_adapters == 0 for r in results) and seg.swap_count == 0
    for image, result in zip(red, results, strict=True):
        assert_mask(result.class_ids, base.predict(image))

    # It finishes while the next batch's network runs: not swapped in the middle, but before the batch after.
    seg.backend.during = executor.finish
    middle = seg.process_batch(red, ["m0", "m1", "m2"], [0.3, 0.4, 0.5])
    assert all(r.fusion is None and r.active_adapters == 0 for r in middle) and seg.swap_count == 0
    for image, result in zip(red, middle, strict=True):
        assert_mask(result.class_ids, base.predict(image))
    after = seg.process_batch(red, ["n0", "n1", "n2"], [0.6, 0.7, 0.8])
    event = after[0].fusion
    assert event is not None and event.reason == "startup" and event.stamp == "r0" and seg.swap_count == 1
    assert [r.fusion for r in after[1:]] == [None, None] and all(r.active_adapters == 2 for r in after)
    fused = reference_model(seg, [library[n] for n in event.adapters], event.weights)
    for image, result in zip(red, after, strict=True):   # every frame of the batch: the fused model
        assert_mask(result.class_ids, fused.predict(image))

    # A shift confirmed within a batch: its adaptation (held until the batch is over) is swapped in once, before
    # the next batch's forward, and reported on that batch's first frame; every batch runs one fusion.
    blue = [frame("blue", i) for i in range(3)]
    swaps = []
    for turn in range(3):
        batch = seg.process_batch(blue, [f"b{turn}{k}" for k in range(3)], [1.0 + turn + k / 10 for k in range(3)])
        executor.finish()
        events = [r.fusion for r in batch if r.fusion is not None]
        assert len(events) <= 1 and all(r.fusion is None for r in batch[1:])
        swaps += events
        active = seg.active
        model = reference_model(seg, [library[n] for n in active.adapters], active.weights)
        for image, result in zip(blue, batch, strict=True):
            assert_mask(result.class_ids, model.predict(image))
    assert [e.reason for e in swaps] == ["shift"] and seg.active.adapters[0] == "blue" and seg.swap_count == 2
    seg.close()


def test_an_adaptation_started_and_finished_within_a_batch_is_swapped_in_for_that_batch(library):
    seg = segmenter_with(library, InlineExecutor())
    images = [frame("green", 0), frame("green", 1, SMALL)]
    results = seg.process_batch(images, ["g0", "g1"], [0.0, 0.1])
    event = results[0].fusion
    assert event.reason == "startup" and event.stamp == "g0" and results[1].fusion is None and seg.swap_count == 1
    fused = reference_model(seg, [library[n] for n in event.adapters], event.weights)
    for image, result in zip(images, results, strict=True):
        assert_mask(result.class_ids, fused.predict(image))
    seg.close()


def test_a_navigator_error_on_one_frame_of_a_batch_costs_no_mask(library):
    seg = segmenter_with(library, InlineExecutor())
    seg.navigator = FailingNavigator({3: "raise"})
    assert seg.process_batch([frame("red", 0)])[0].fusion.reason == "startup"
    images = [frame("red", 1), frame("red", 2, SMALL), frame("red", 3)]
    results = seg.process_batch(images, ["x", "y", "z"], [1.0, 1.1, 1.2])
    assert [r.embedded for r in results] == [True, False, True]
    assert results[0].navigator_error is None and "fell over" in results[1].navigator_error \
        and results[2].navigator_error is None
    for image, result in zip(images, results, strict=True):
        assert_mask(result.class_ids, seg.predictor.predict(image))
    assert seg.navigator_errors == 1 and seg.swap_count == 1
    seg.close()


def test_an_engine_limit_splits_a_batch_and_everything_is_checked_before_anything_changes(library, caplog):
    seg = segmenter_with(library, InlineExecutor(), backend_limit=2)
    images = [frame("red", i) for i in range(5)]
    with caplog.at_level("INFO", logger="semla_ros.core.segmenter"):
        results = seg.process_batch(images)
        seg.process_batch(images)
    assert seg.backend.calls == [2, 2, 1] * 2 and [r.batch for r in results] == [2, 2, 2, 2, 1]
    assert sum("at most 2 views a forward" in m for m in caplog.messages) == 1   # said once
    frames_before, forwards = seg.swap_count, seg.forwards
    with pytest.raises(ValueError, match="uint8"):
        seg.process_batch([images[0], images[1].astype(np.float32)])
    with pytest.raises(ValueError, match="finite"):
        seg.process_batch(images[:2], times=[1.0, math.nan])
    with pytest.raises(ValueError, match="as many"):
        seg.process_batch(images[:2], stamps=["only one"])
    assert seg.process_batch([]) == [] and seg.forwards == forwards and seg.swap_count == frames_before
    seg.close()
    with pytest.raises(RuntimeError, match="closed"):
        seg.process_batch(images)


def test_which_backends_batch():
    """PyTorch and ONNX Runtime (the export's `views` axis is dynamic) take any batch; a TensorRT engine's profile
    takes up to 5 views a forward."""
    from semla_ros.backends.base import Backend
    from semla_ros.backends.onnxruntime_backend import OnnxRuntime
    from semla_ros.backends.tensorrt_backend import MAX_VIEWS, TensorRTRuntime
    from semla_ros.backends.torch_backend import TorchBackend

    assert TorchBackend.max_batch is None and Backend.max_batch is None and OnnxRuntime.max_views is None
    assert TensorRTRuntime.max_views == MAX_VIEWS == 5
