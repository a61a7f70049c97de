"""Several inference workers on one segmenter (`decide_batch` + `segment`): decisions one batch at a time, in
call order, and without waiting for another batch's forward unless a swap is due; the forwards of decided
batches side by side; a swap (or a new vocabulary) waits for the forwards in flight, so every frame is segmented
by the model its result names.

Compared with a twin segmenter that runs the same frames one `process_batch` after the other: every field
equal, masks bit for bit (each batch here is one frame, so no batched forward is involved)."""
import threading

import pytest
from test_core_segmenter import frame, make_library, make_segmenter, tiny_targets  # noqa: F401  (a fixture)
from test_core_segmenter_batch import assert_same

from semla_ros.core.library import AdapterLibrary


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_targets):  # noqa: F811  (tiny_targets: the imported fixture)
    return AdapterLibrary.open(make_library(tmp_path_factory.mktemp("lib"), tiny_targets), navigator_dim=3)


def warmed(library):
    """A segmenter past its startup fusion on steady 'red' frames."""
    seg = make_segmenter(library)
    for i in range(3):
        seg.process(frame("red", i), stamp=i)
    assert seg.swap_count == 1
    return seg


def test_decided_batches_segment_side_by_side_and_give_process_batchs_results(library):
    workers, twin = warmed(library), warmed(library)
    for turn in range(3):
        first, second = frame("red", 10 + 2 * turn), frame("red", 11 + 2 * turn)
        a = workers.decide_batch([first], [f"a{turn}"])
        results: dict = {}

        decided = threading.Event()

        def second_worker(image=second, turn=turn, results=results, decided=decided):
            """Decided while `a` holds the model, then segmented beside it."""
            batch = workers.decide_batch([image], [f"b{turn}"])
            decided.set()
            results["b"] = batch.segment()

        other = threading.Thread(target=second_worker)
        other.start()
        assert decided.wait(30), "a decision without a swap waited for another batch's forward"
        results["a"] = a.segment()
        other.join(30)
        assert not other.is_alive()
        assert_same(twin.process_batch([first], [f"a{turn}"])[0], results["a"][0])
        assert_same(twin.process_batch([second], [f"b{turn}"])[0], results["b"][0])
    assert workers.forwards == twin.forwards and workers.swap_count == twin.swap_count == 1
    workers.close()
    twin.close()


def test_a_swap_waits_for_the_forward_in_flight(library):
    seg, twin = warmed(library), warmed(library)
    fused = seg.active
    image = frame("red", 20)
    held = seg.decide_batch([image], ["held"])
    restored = []
    swap = threading.Thread(target=lambda: restored.append(seg.fuse_now([], [], reason="manual")))
    swap.start()
    swap.join(0.3)
    assert swap.is_alive() and seg.active is fused   # the base model waits for the forward in flight
    result = held.segment()[0]
    swap.join(30)
    assert not swap.is_alive() and restored and seg.active is not fused
    assert result.active_adapters == len(fused.adapters)
    assert_same(twin.process_batch([image], ["held"])[0], result)   # the fused model's mask, bit for bit
    seg.close()
    twin.close()


def test_a_batch_let_go_without_its_forward_frees_the_model(library):
    seg = warmed(library)
    held = seg.decide_batch([frame("red", 30)])
    held.close()
    held.close()                                           # once is enough; twice is harmless
    classes = list(reversed(seg.predictor.class_names))
    change = threading.Thread(target=seg.set_classes, args=(classes,))
    change.start()
    change.join(30)
    assert not change.is_alive() and list(seg.predictor.class_names) == classes
    with pytest.raises(RuntimeError, match="let its model go"):
        held.segment()
    seg.close()
