"""SemlaSegmenter races found in review: a request landing anywhere in a frame is served and named, a navigator
failure costs no mask, a reload leaves no stale support. Interleavings are forced deterministically: the request
is made at the k-th line the segmenter executes (a trace hook), for every k of a frame."""
import itertools
import math
import sys

import numpy as np
import pytest
from test_core_segmenter import (
    MeanColorNavigator,
    frame,
    make_library,
    make_segmenter,
    tiny_targets,  # noqa: F401  (a fixture, used through `library`)
)

from semla_ros.core import adaptation, decider, embedding_scheduler
from semla_ros.core import segmenter as segmenter_module
from semla_ros.core.requests import PendingRequest
from semla_ros.core.retrieval import retrieve

WORKER = {"_adapt", "_stage", "_failure"}   # the adaptation worker's methods (inline here): no frame code runs there
# The segmenter and its parts: the frame's own code, wherever it runs
PARTS = {m.__file__: c for m, c in [(segmenter_module, segmenter_module.SemlaSegmenter),
                                    (decider, decider.FusionDecider),
                                    (embedding_scheduler, embedding_scheduler.EmbeddingScheduler),
                                    (adaptation, adaptation.AdaptationRunner)]}


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_targets):  # noqa: F811  (tiny_targets: the imported fixture)
    """The segmenter tests' three-adapter library (test_core_segmenter.make_library)."""
    from semla_ros.core.library import AdapterLibrary

    return AdapterLibrary.open(make_library(tmp_path_factory.mktemp("lib"), tiny_targets), navigator_dim=3)


def process_with_hook(seg, k: int, action, image):
    """process(image), running `action` at the k-th line the inference thread executes in the methods of the
    segmenter and its parts (decider, embedding scheduler, adaptation runner) before the network runs (as a
    service thread could, between any two of them; once the network runs the frame has decided); returns
    (result, whether line k was reached)."""
    count, fired, predict = itertools.count(), [], type(seg.predictor).predict_frames.__code__

    def local(frame_, event, arg):
        if event == "line" and not fired and next(count) == k:
            fired.append(True)
            action()
        return local

    def tracer(frame_, event, arg):
        code = frame_.f_code
        if code is predict:
            fired.append(False)     # the frame has decided: stop
        elif code.co_filename in PARTS and code.co_name not in WORKER \
                and isinstance(frame_.f_locals.get("self"), PARTS[code.co_filename]) and not fired:
            return local
        return None

    sys.settrace(tracer)
    try:
        result = seg.process(image)
    finally:
        sys.settrace(None)
    return result, bool(fired and fired[0])


@pytest.mark.slow   # a frame or two per line of a frame's decision
def test_a_manual_request_landing_anywhere_in_a_fusing_frame_is_served_and_reported_as_manual(library):
    # trigger "frame": every frame fuses for itself (a shift), so a request made while a frame decides can be
    # lost to that fusion; one it leaves pending is for the next adaptation to serve. A fusion is swapped in
    # the frame after it was staged when one is still waiting, so the request's shows within three frames.
    seg = make_segmenter(library, trigger="frame")
    assert seg.process(frame("red", 0)).fusion.reason == "startup"
    images = (frame("red", i) for i in itertools.count(1))
    for k in itertools.count():
        fusing, fired = process_with_hook(seg, k, seg.request_adaptation, next(images))
        if not fired:
            break
        assert fusing.embedded and fusing.fusion is not None
        reasons = [fusing.fusion.reason]
        while "manual" not in reasons and len(reasons) < 3:
            reasons.append(seg.process(next(images)).fusion.reason)
        assert reasons[-1] == "manual" and set(reasons[:-1]) <= {"shift"}, f"request made at line {k}: {reasons}"
    seg.close()
    assert k > 20    # the hook really walked through the frame


def test_requests_merge_and_are_taken_once():
    pending = PendingRequest()
    assert pending.take() is None
    pending.put("manual")
    pending.put("reload")
    pending.put("manual")
    assert pending.pending and pending.take() == "reload" and pending.take() is None
    with pytest.raises(ValueError):
        pending.put("shift")


class FailingNavigator(MeanColorNavigator):
    """The mean colour, except on the calls in `failures` (an exception, or a NaN embedding)."""

    def __init__(self, failures):
        self.failures, self.calls = dict(failures), 0

    def embed(self, images):
        self.calls += 1
        failure = self.failures.get(self.calls)
        if failure == "raise":
            raise RuntimeError("navigator tower fell over")
        out = super().embed(images)
        return out * np.nan if failure == "nan" else out


def test_a_navigator_failure_costs_no_mask_is_reported_once_and_the_next_frame_retries(library):
    seg = make_segmenter(library)
    seg.navigator = FailingNavigator({2: "raise", 4: "nan"})
    assert seg.process(frame("red", 0)).fusion.reason == "startup"
    for i, (failing, message) in enumerate([(True, "fell over"), (False, None), (True, "NaN"), (False, None)], 1):
        image = frame("red", i)
        result = seg.process(image)
        np.testing.assert_array_equal(result.class_ids, seg.predictor.predict(image).class_ids)
        assert result.embedded is not failing and result.fusion is None
        if failing:
            assert message in result.navigator_error
        else:
            assert result.navigator_error is None
    assert seg.navigator_errors == 2 and seg.navigator.calls == 5 and seg.swap_count == 1
    seg.close()


def test_after_a_reload_no_support_of_the_old_library_is_reported(library, tmp_path, tiny_targets):  # noqa: F811
    seg = make_segmenter(library, embed_every_n=2)
    first = seg.process(frame("red", 10))   # not seed 0: that frame sits on red's centroid (support inf)
    assert math.isfinite(first.support) and math.isfinite(first.supports.scale_free)
    seg.reload_library(make_library(tmp_path / "new", tiny_targets, names=("red", "blue"), seed=3))
    between = seg.process(frame("red", 11))                # not an embedding frame: nothing known of the new library
    assert between.fusion.reason == "reload"
    assert math.isnan(between.support) and math.isnan(between.supports.scale_free)
    after = seg.process(frame("red", 12))
    expected = retrieve(MeanColorNavigator().embed([frame("red", 12)])[0], seg.library.index, 2, 0.05)
    assert after.embedded and after.support == pytest.approx(expected.support)
    seg.close()
