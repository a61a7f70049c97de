"""SemlaSegmenter on the tiny CAT-Seg config: startup/shift/manual/reload fusions, atomic swaps, failures."""
import itertools
import math
import time

import numpy as np
import pytest
import torch

from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.fusion import WeightStager
from semla_ros.core.library import AdapterLibrary, write_entry
from semla_ros.core.retrieval import retrieve
from semla_ros.core.segmenter import InlineExecutor, SemlaSegmenter
from semla_ros.core.settings import SegmenterSettings

CLASSES = ["road", "sky", "car", "tree"]
DOMAINS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


class MeanColorNavigator:
    """A real (if simple) navigator: the mean RGB colour, in 0..10 units."""

    dim = 3
    id = "mean-color"

    def embed(self, images):
        return np.stack([im.reshape(-1, 3).mean(0) / 25.5 for im in images]).astype(np.float32)


def frame(domain, seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    base = np.array(DOMAINS[domain], dtype=np.int16)
    return np.clip(base + rng.integers(-20, 21, size=(*size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_targets(fixture_dir):
    model = build_catseg("tiny")
    lib = AdapterLibrary.open(fixture_dir / "loradb", model=model)   # the official adapters fit the tiny model
    assert lib.skipped == [] and len(lib["fog"].factors) == 46
    return {m: (a.shape[1], b.shape[0]) for m, (a, b) in lib["fog"].factors.items()}


def make_library(root, targets, names=("red", "green", "blue"), scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    for name in names:
        factors = {m: (torch.randn(4, i_f, generator=g) * scale, torch.randn(o_f, 4, generator=g) * scale)
                   for m, (i_f, o_f) in targets.items()}
        write_entry(root, name, factors, MeanColorNavigator().embed([frame(name)])[0], lora_alpha=8,
                    metadata={"navigator": "mean-color", "embedding_dim": 3})
    return root


def make_segmenter(library, sync=True, clock=None, **settings):
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES)
    s = SegmenterSettings(**({"threshold_mode": "absolute", "switch_threshold": 1.0, "cooldown_s": 0.0,
                              "ema_alpha": 0.5, "min_consecutive": 2, "top_k": 2, "trigger": "distance",
                              "dwell_s": 0.0, "warmup_frames": 1,
                              "embed_rest_every_n": 1} | settings))
    ticks = itertools.count()
    return SemlaSegmenter(predictor, library, MeanColorNavigator(), s, executor=InlineExecutor() if sync else None,
                          clock=clock or (lambda: float(next(ticks))))


def reference_model(seg, entries, weights):
    """A fresh copy of the base model with the fusion applied the plain way."""
    model = build_catseg("tiny")
    torch.manual_seed(0)
    model.load_state_dict(build_catseg("tiny").state_dict())
    predictor = CatSegPredictor(model, seg.predictor.class_names)
    predictor.load_weights(WeightStager(model, seg.library.target_modules).stage_fusion(entries, weights).weights)
    return predictor


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_targets):
    return AdapterLibrary.open(make_library(tmp_path_factory.mktemp("lib"), tiny_targets), navigator_dim=3)


def test_startup_fusion_is_exact_and_the_mask_is_the_fused_models(library):
    seg = make_segmenter(library)
    torch.manual_seed(0)
    base = CatSegPredictor(build_catseg("tiny"), CLASSES)
    image = frame("red", 1)
    res = seg.process(image, stamp="t0")
    ev = res.fusion
    assert ev is not None and ev.ok and ev.reason == "startup" and ev.stamp == "t0" and ev.swap_count == 1
    q = MeanColorNavigator().embed([image])[0]
    r = retrieve(q, library.centroids, 2, 0.05)
    assert ev.adapters == [library.names[i] for i in r.indices] and ev.adapters[0] == "red"
    np.testing.assert_allclose(ev.weights, r.weights, rtol=1e-12)
    assert res.support == pytest.approx(r.support) and res.embedded and res.active_adapters == 2
    assert math.isnan(res.ema_distance)
    ref = reference_model(seg, [library[n] for n in ev.adapters], ev.weights)
    for name in library.target_modules:
        assert torch.equal(seg.predictor.model.get_submodule(name).weight, ref.model.get_submodule(name).weight)
    torch.testing.assert_close(seg.predictor.text_embeddings(), ref.text_embeddings(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(res.class_ids, ref.predict(image).class_ids)
    # the fusion really changed the model and the text tower
    assert (seg.predictor.text_embeddings() - base.text_embeddings()).abs().max() > 1e-4
    seg.close()


def test_shift_swaps_once_and_steady_frames_do_not(library):
    seg = make_segmenter(library)
    events = [seg.process(frame(d, i), stamp=i).fusion for i, d in enumerate(["red"] * 3 + ["blue"] * 5)]
    reasons = [(i, e.reason, e.adapters[0]) for i, e in enumerate(events) if e is not None]
    assert reasons[0] == (0, "startup", "red")
    assert len(reasons) == 2 and reasons[1][1:] == ("shift", "blue") and 4 <= reasons[1][0] <= 5
    assert seg.swap_count == 2 and seg.failed_fusions == 0 and seg.active.adapters[0] == "blue"
    seg.close()


def _target_weights(seg):
    return {n: seg.predictor.model.get_submodule(n).weight.clone() for n in seg.library.target_modules}


def _drive(seg, domains):
    return [e for i, d in enumerate(domains) if (e := seg.process(frame(d, i), stamp=i).fusion) is not None]


def test_the_evidence_trigger_swaps_within_frames_of_a_change(library):
    seg = make_segmenter(library, trigger="evidence", warmup_frames=2)
    events = [seg.process(frame(d, i), stamp=i).fusion for i, d in enumerate(["red"] * 6 + ["blue"] * 6)]
    reasons = [(i, e.reason, e.adapters[0]) for i, e in enumerate(events) if e is not None]
    assert reasons[0] == (1, "startup", "red")
    assert reasons[1][1:] == ("shift", "blue") and 6 <= reasons[1][0] <= 8 and len(reasons) == 2
    seg.close()


def test_returning_to_a_domain_recalls_its_fusion_exactly(library):
    seg = make_segmenter(library, trigger="evidence", warmup_frames=1)
    image = frame("red", 99)
    first = seg.process(image).fusion
    red_weights, red_mask = _target_weights(seg), seg.process(image).class_ids
    red_text = seg.predictor.text_embeddings()
    events = [first] + _drive(seg, ["green"] * 6 + ["red"] * 6)
    assert [(e.reason, e.adapters[0], e.recalled) for e in events] == [
        ("startup", "red", False), ("shift", "green", False), ("shift", "red", True)]
    assert events[2].adapters == first.adapters and events[2].weights == first.weights
    after = _target_weights(seg)
    assert all(torch.equal(after[n], red_weights[n]) for n in red_weights)
    torch.testing.assert_close(seg.predictor.text_embeddings(), red_text, rtol=0, atol=0)
    np.testing.assert_array_equal(seg.process(image).class_ids, red_mask)
    seg.close()


def test_recall_off_or_a_new_vocabulary_makes_a_new_fusion(library):
    seg = make_segmenter(library, trigger="evidence", warmup_frames=1, fusion_recall=0)
    events = _drive(seg, ["red"] + ["green"] * 6 + ["red"] * 6)
    assert [e.recalled for e in events] == [False, False, False]
    seg.close()
    seg = make_segmenter(library, trigger="frame", warmup_frames=1)      # per-image SemLA: a fusion per frame
    events = _drive(seg, ["red"] * 2 + ["green"] * 2 + ["red"] * 2)
    assert len(events) == 6 and not any(e.recalled for e in events)
    seg.close()
    seg = make_segmenter(library, trigger="evidence", warmup_frames=1)
    events = _drive(seg, ["red"] + ["green"] * 6)
    seg.set_classes(["road", "sky"])
    events += _drive(seg, ["red"] * 6)
    assert [(e.adapters[0], e.recalled) for e in events] == [("red", False), ("green", False), ("red", False)]
    seg.close()


def test_worker_thread_swaps_between_frames(library):
    seg = make_segmenter(library, sync=False)
    first = seg.process(frame("green", 0), stamp="s0")
    assert first.fusion is None            # adaptation runs on the worker, never swapped mid-frame
    deadline = time.monotonic() + 60
    while seg.active is None and time.monotonic() < deadline:
        time.sleep(0.05)
        res = seg.process(frame("green", 1), stamp="s1")
        if res.fusion is not None:
            break
    assert res.fusion is not None and res.fusion.reason == "startup" and res.fusion.stamp == "s0"
    assert res.fusion.adapters[0] == "green" and res.active_adapters == 2
    ref = reference_model(seg, [library[n] for n in res.fusion.adapters], res.fusion.weights)
    np.testing.assert_array_equal(res.class_ids, ref.predict(frame("green", 1)).class_ids)
    seg.close()
    with pytest.raises(RuntimeError, match="closed"):
        seg.process(frame("green", 2))


def test_absurd_adapter_is_skipped_and_a_failed_fusion_keeps_the_previous_model(tmp_path, tiny_targets):
    root = make_library(tmp_path, tiny_targets, names=("red", "green"))
    g = torch.Generator().manual_seed(5)
    huge = {m: (torch.randn(4, i, generator=g) * 1e20, torch.randn(o, 4, generator=g) * 1e20)
            for m, (i, o) in tiny_targets.items()}
    write_entry(root, "blue", huge, MeanColorNavigator().embed([frame("blue")])[0], lora_alpha=8,
                metadata={"navigator": "mean-color"})
    seg = make_segmenter(AdapterLibrary.open(root, navigator_dim=3), top_k=1)
    assert seg.process(frame("red", 0)).fusion.ok
    # the absurd adapter is skipped with its name and reason; the fusion goes on without it
    events = [r.fusion for r in (seg.process(frame("blue", i)) for i in range(1, 5)) if r.fusion is not None]
    assert len(events) == 1 and events[0].ok and events[0].reason == "shift" and events[0].adapters != ["blue"]
    assert [n for n, _ in events[0].skipped] == ["blue"] and "times the weight" in events[0].skipped[0][1]
    assert seg.library.failed == events[0].skipped and seg.failed_fusions == 0 and seg.swap_count == 2
    # nothing usable left (the other files truncated, nothing cached): the fusion fails, the model stays
    seg.update_settings(adapter_cache_mb=0)
    for name in ("red", "green"):
        (root / name / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    weights = {n: seg.predictor.model.get_submodule(n).weight.clone() for n in seg.library.target_modules}
    text = seg.predictor.text_embeddings().clone()
    seg.request_adaptation()
    failed = seg.process(frame("blue", 5)).fusion
    assert not failed.ok and "no usable adapter" in failed.error and "changed on disk" in failed.error
    assert seg.failed_fusions == 1 and seg.swap_count == 2 and seg.active.adapters == events[0].adapters
    for n, w in weights.items():
        assert torch.equal(seg.predictor.model.get_submodule(n).weight, w)
    assert torch.equal(seg.predictor.text_embeddings(), text)
    after = seg.process(frame("blue", 6))         # frames go on; nothing usable supports them any more
    assert after.support == 0.0 and after.fusion is None and seg.active.adapters == events[0].adapters
    seg.close()


def test_adapters_are_read_ahead_while_a_shift_is_confirmed(library):
    lib = AdapterLibrary.open(library.root, navigator_dim=3)       # a snapshot with a cache of its own
    seg = make_segmenter(lib, top_k=1, min_consecutive=3)
    assert seg.process(frame("red", 0)).fusion.adapters == ["red"]
    assert [e.name for e in lib.entries if e.cached] == ["red"]    # opening read nothing, the fusion one
    first = seg.process(frame("blue", 1))
    assert first.consecutive == 1 and first.fusion is None and lib["blue"].cached    # read ahead
    misses = lib.cache.stats().misses
    events = [seg.process(frame("blue", i)).fusion for i in range(2, 5)]
    swap = next(e for e in events if e is not None)
    assert swap.ok and swap.reason == "shift" and swap.adapters == ["blue"]
    assert lib.cache.stats().misses == misses                       # the swap itself read no file
    seg.close()


def test_base_model_only_without_library():
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES)
    seg = SemlaSegmenter(predictor, None, None, executor=InlineExecutor())
    res = seg.process(frame("red", 3))
    assert math.isnan(res.support) and res.fusion is None and not res.embedded and res.active_adapters == 0
    torch.manual_seed(0)
    plain = CatSegPredictor(build_catseg("tiny"), CLASSES)
    np.testing.assert_array_equal(res.class_ids, plain.predict(frame("red", 3)).class_ids)
    seg.close()


def test_manual_reload_classes_and_settings(library, tmp_path, tiny_targets):
    seg = make_segmenter(library, embed_every_n=2)
    results = [seg.process(frame("red", i)) for i in range(3)]
    assert [r.embedded for r in results] == [True, False, True]
    seg.request_adaptation()
    manual = seg.process(frame("red", 3))              # not an embedding frame: adapts for the current EMA
    assert manual.fusion.reason == "manual" and not manual.embedded and seg.swap_count == 2

    seg.set_classes(["road", "sky"])                   # re-encoded with the fused text tower
    active = seg.active
    ref = reference_model(seg, [library[n] for n in active.adapters], active.weights)
    ref.set_classes(["road", "sky"])
    torch.testing.assert_close(seg.predictor.text_embeddings(), ref.text_embeddings(), rtol=0, atol=1e-6)
    assert seg.process(frame("red", 4)).class_ids.max() <= 1
    with pytest.raises(ValueError):
        seg.set_classes([])

    with pytest.raises(ValueError, match="top_k"):
        seg.update_settings(top_k=0)
    with pytest.raises(ValueError, match="unknown"):
        seg.update_settings(topk=3)
    with pytest.raises(ValueError, match="threshold_mode"):
        seg.update_settings(threshold_mode="percent")
    assert seg.settings.top_k == 2
    seg.update_settings(threshold_mode="relative", switch_threshold=0.25)
    assert seg.threshold == pytest.approx(0.25 * library.median_inter_centroid_distance)

    with pytest.raises(FileNotFoundError):
        seg.reload_library(tmp_path / "missing")
    assert seg.library is library
    new_root = make_library(tmp_path / "new", tiny_targets, names=("red", "blue"), seed=3)
    n, skipped = seg.reload_library(new_root)
    assert (n, skipped) == (2, []) and seg.library.names == ("blue", "red")
    reload = seg.process(frame("red", 5)).fusion
    assert reload.reason == "reload" and reload.adapters == ["red", "blue"]
    seg.close()


def test_library_loaded_later_fuses_once_as_reload(library):
    seg = make_segmenter(None)
    assert seg.process(frame("red", 0)).fusion is None
    assert seg.reload_library(library.root) == (3, [])
    fusions = [r.fusion for r in (seg.process(frame("red", i)) for i in range(1, 4)) if r.fusion is not None]
    assert [f.reason for f in fusions] == ["reload"] and seg.swap_count == 1
    seg.close()
