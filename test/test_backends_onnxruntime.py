"""The shared engine lifecycle, driven through ONNX Runtime on the CPU (what TensorRT runs on a GPU).

The model is the demo's small CAT-Seg (96 px, 12x12 grid) with pad_len 8, so exports and frames take
seconds. Builds run on a `StepExecutor`: the test decides when a "background" build runs, which makes a
swap during a rebuild deterministic. The property checked throughout: whatever serves a frame (engine or
PyTorch), its logits are those of the weights the predictor holds, i.e. the announced fusion.
"""
from __future__ import annotations

import dataclasses
import json
from collections import deque
from concurrent.futures import Executor, Future

import numpy as np
import pytest
import torch
from engine_helpers import HeldExport

from semla_ros.backends import engine_lifecycle
from semla_ros.backends.engine_cache import OnnxKey
from semla_ros.backends.engine_lifecycle import ONNX_FILE, EngineBackend
from semla_ros.backends.onnxruntime_backend import OnnxRuntime, onnxruntime_unavailable_reason
from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.library import AdapterLibrary, write_entry
from semla_ros.core.segmenter import InlineExecutor, SemlaSegmenter
from semla_ros.core.settings import SegmenterSettings
from semla_ros.core.targets import semla_target_modules
from semla_ros.demo.build_assets import demo_config

pytestmark = pytest.mark.skipif(onnxruntime_unavailable_reason() is not None,
                                reason=f"onnxruntime not usable: {onnxruntime_unavailable_reason()}")

_DEMO = demo_config()
CONFIG = dataclasses.replace(_DEMO, aggregator=dataclasses.replace(_DEMO.aggregator, pad_len=8))
CLASSES = ["road", "sky", "car"]
OUT_PROJ = "sem_seg_head.predictor.clip_model.visual.transformer.resblocks.1.attn.out_proj"
PARITY = 1e-4


class StepExecutor(Executor):
    """Holds submitted builds until the test runs them with step()."""

    def __init__(self):
        self.jobs: deque = deque()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self.jobs.append((future, fn, args, kwargs))
        return future

    def step(self) -> None:
        future, fn, args, kwargs = self.jobs.popleft()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-cache")


def make(cache, executor="inline", classes=CLASSES, **options):
    """Predictor + ONNX Runtime engine backend; builds run inline, on `executor`, or (None) on the backend's
    own background thread."""
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg(CONFIG), classes)
    backend = EngineBackend(predictor, OnnxRuntime(predictor), cache_dir=cache,
                            executor=InlineExecutor() if executor == "inline" else executor, **options)
    return predictor, backend


def views(predictor, seed=0):
    image = (np.random.default_rng(seed).random((60, 80, 3)) * 255).astype(np.uint8)
    return predictor.preprocess(image)[0]


def swap(predictor, backend, modules, seed, scale=0.5):
    """Full weights for `modules` handed over as the segmenter does: the predictor first, then the backend."""
    gen = torch.Generator().manual_seed(seed)
    weights = {m: predictor.model.get_submodule(m).weight.detach() + scale * torch.randn(
        predictor.model.get_submodule(m).weight.shape, generator=gen) for m in modules}
    predictor.load_weights(weights)
    return backend.update_weights(weights)


def check_frame(predictor, backend, x, expect):
    """The backend's logits are PyTorch's for the weights the predictor holds; `expect` says who served."""
    text = predictor.text_embeddings()
    out = backend.forward(x, text)
    assert backend.serving == expect, backend.status()
    assert (out - predictor.forward(x, text)).abs().max().item() < PARITY
    return out


@pytest.mark.slow
def test_engine_matches_pytorch_and_a_fusion_needs_no_rebuild(cache):
    predictor, backend = make(cache)
    engine = backend.wait_ready()
    assert backend.status()[0] == "ok" and engine.capacity == 8          # the export's class limit (pad_len)
    targets = [m for m in semla_target_modules(predictor.model) if f"{m}.weight" in backend.engine_params]
    assert {f"{m}.weight" for m in targets} == engine.reachable          # every fusion target is an input
    x = views(predictor)
    before = check_frame(predictor, backend, x, "engine")
    report = swap(predictor, backend, semla_target_modules(predictor.model), seed=1)
    assert report.updated == len(targets) and not report.rebuild_started and report.unreached == ()
    after = check_frame(predictor, backend, x, "engine")
    assert (after - before).abs().max().item() > 1e-2                     # the fusion changed the output
    assert backend.builds == 1 and backend.installs == 1


@pytest.mark.slow
def test_a_weight_the_update_cannot_reach_runs_pytorch_until_rebuilt(cache):
    executor = StepExecutor()
    predictor, backend = make(cache, executor)
    x = views(predictor)
    check_frame(predictor, backend, x, "pytorch")                        # first build not run yet
    assert "being built" in backend.status()[1]
    executor.step()
    check_frame(predictor, backend, x, "engine")
    assert f"{OUT_PROJ}.weight" in backend.engine.baked                    # not a fusion target: baked in

    report = swap(predictor, backend, [OUT_PROJ], seed=2)
    assert report.unreached == (f"{OUT_PROJ}.weight",) and report.rebuild_started
    check_frame(predictor, backend, x, "pytorch")
    level, message = backend.status()
    assert level == "warn" and OUT_PROJ in message and "rebuilt" in message
    executor.step()                                                       # the rebuild, exported from the fusion
    check_frame(predictor, backend, x, "engine")
    assert backend.builds == 2 and backend.installs == 2 and backend.status()[0] == "ok"


@pytest.mark.slow
def test_swap_during_rebuild_discards_the_stale_build(cache):
    executor = StepExecutor()
    predictor, backend = make(cache, executor)
    executor.step()
    x = views(predictor)
    check_frame(predictor, backend, x, "engine")
    swap(predictor, backend, [OUT_PROJ], seed=3)                          # fusion A: rebuild starts
    executor.step()                                                       # the rebuild snapshots A ...
    a = predictor.forward(x, predictor.text_embeddings())
    swap(predictor, backend, [OUT_PROJ], seed=4)                          # ... fusion B lands before it swaps in
    b = check_frame(predictor, backend, x, "pytorch")                     # A's engine never serves B's frames
    assert backend.discarded == 1 and len(executor.jobs) == 1             # discarded, rebuild for B queued
    assert (a - b).abs().max().item() > 1e-2
    executor.step()
    check_frame(predictor, backend, x, "engine")
    assert backend.installs == 2 and backend.builds == 3


@pytest.mark.slow
def test_rebuilds_running_on_a_thread_never_serve_unannounced_weights(cache):
    predictor, backend = make(cache, executor=None)   # the backend's own build thread
    backend.wait_ready()
    x = views(predictor)
    for seed in range(5, 9):   # swaps while a rebuild runs: every frame must match the announced weights
        swap(predictor, backend, [OUT_PROJ] + semla_target_modules(predictor.model)[:2], seed=seed)
        for _ in range(2):
            text = predictor.text_embeddings()
            assert (backend.forward(x, text) - predictor.forward(x, text)).abs().max().item() < PARITY
    backend.wait_ready()
    check_frame(predictor, backend, x, "engine")
    backend.close()


def test_close_waits_for_the_export_in_flight_and_the_build_stops_there(tmp_path, monkeypatch):
    """close() while the backend's own build thread exports: the export runs to its end, the build stops at
    the safe point after it (no engine is built), and the build thread has ended when close() returns."""
    held, built, real_build = HeldExport(engine_lifecycle.export_onnx), [], OnnxRuntime.build
    monkeypatch.setattr(engine_lifecycle, "export_onnx", held)
    monkeypatch.setattr(OnnxRuntime, "build", lambda self, *a: built.append(a) or real_build(self, *a))
    predictor, backend = make(tmp_path, executor=None)   # a fresh cache: the build exports
    held.close_during(backend)
    assert held.ended
    assert built == [] and backend.engine is None and backend.installs == 0
    assert backend.onnx_cache.find(backend.onnx_key(predictor.model), ONNX_FILE) is not None   # finished whole
    check_frame(predictor, backend, views(predictor), "pytorch")   # a closed backend serves PyTorch, builds nothing
    assert backend.builds == 1


@pytest.mark.slow
def test_vocabulary_growth_past_the_profile(cache):
    executor = StepExecutor()
    predictor, backend = make(cache, executor, max_classes=4)
    executor.step()
    x = views(predictor)
    check_frame(predictor, backend, x, "engine")
    predictor.set_classes(["road", "sky", "car", "tree", "person", "pole"])      # 6 > the profile's 4
    check_frame(predictor, backend, x, "pytorch")
    assert "class profile (4)" in backend.status()[1] and len(executor.jobs) == 1
    executor.step()
    check_frame(predictor, backend, x, "engine")
    assert backend.engine.capacity == 8

    predictor.set_classes([f"class {i}" for i in range(9)])                       # past what the export represents
    check_frame(predictor, backend, x, "pytorch")
    assert "exported network represents" in backend.status()[1] and not executor.jobs
    predictor.set_classes(CLASSES)
    check_frame(predictor, backend, x, "engine")


@pytest.mark.slow
def test_stale_cache_keys_export_again(cache, tmp_path):
    key = OnnxKey(model_digest="m", precision="fp32", opset=17, exporter="torchscript", export_code="c",
                  torch_version="2.14.1")
    digests = {key.digest()} | {dataclasses.replace(key, **change).digest() for change in (
        dict(model_digest="n"), dict(precision="fp16"), dict(opset=18), dict(exporter="dynamo"),
        dict(export_code="d"), dict(torch_version="2.15.0"))}
    assert len(digests) == 7                                               # every field makes a new entry

    _, first = make(tmp_path)
    first.wait_ready()
    entries = sorted((tmp_path / "onnx").iterdir())
    assert len(entries) == 1
    exported = entries[0] / "model.onnx"
    stamp = exported.stat().st_mtime_ns
    _, again = make(tmp_path)                                             # same key: the export is reused
    assert exported.stat().st_mtime_ns == stamp and len(list((tmp_path / "onnx").iterdir())) == 1
    _, other = make(tmp_path, opset=18)                                   # another opset: a new export
    other.wait_ready()
    assert len(list((tmp_path / "onnx").iterdir())) == 2 and other.engine.onnx_path != first.engine.onnx_path
    meta = entries[0] / "key.json"                                        # a key file that does not match
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "torch_version": "0.0"}))
    _, rebuilt = make(tmp_path)
    assert json.loads(meta.read_text())["torch_version"] == torch.__version__   # exported again, not trusted


def test_a_failed_build_is_said_and_pytorch_serves(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    predictor, backend = make(blocker)                                    # the cache cannot be created
    x = views(predictor)
    check_frame(predictor, backend, x, "pytorch")
    said = backend.status()
    check_frame(predictor, backend, x, "pytorch")
    assert said[0] == "warn" and "building the onnxruntime engine failed" in said[1]
    with pytest.raises(RuntimeError, match="failed"):
        backend.wait_ready()
    assert backend.builds == 1                                            # not retried frame after frame


class ConstantNavigator:
    dim = 3
    id = "constant"

    def embed(self, images):
        return np.zeros((len(images), 3), np.float32)


@pytest.mark.slow
def test_segmenter_masks_are_the_announced_fusions(cache, tmp_path):
    """Through SemlaSegmenter: after every fusion, the published mask is PyTorch's mask for that fusion,
    whether the engine or the PyTorch path served it (one adapter also adapts a baked-in weight)."""
    executor = StepExecutor()
    predictor, backend = make(cache, executor)
    executor.step()
    gen = torch.Generator().manual_seed(7)
    targets = semla_target_modules(predictor.model)
    for i, (name, modules) in enumerate((("plain", targets), ("baked", targets + [OUT_PROJ]))):
        factors = {m: (torch.randn(4, predictor.model.get_submodule(m).in_features, generator=gen) * 0.3,
                       torch.randn(predictor.model.get_submodule(m).out_features, 4, generator=gen) * 0.3)
                   for m in modules}
        write_entry(tmp_path / "lib", name, factors, np.eye(3)[i], lora_alpha=8)
    library = AdapterLibrary.open(tmp_path / "lib", model=predictor.model)
    segmenter = SemlaSegmenter(predictor, library, ConstantNavigator(), SegmenterSettings(warmup_frames=10000),
                               backend=backend, executor=InlineExecutor())
    image = (np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)
    plain, baked = library["plain"], library["baked"]

    def fuse_and_check(entries, serving):
        event = segmenter.fuse_now(entries, [1.0] * len(entries))
        assert event.ok, event.error
        result = segmenter.process(image)
        assert backend.serving == serving
        reference = predictor.predict(image)   # PyTorch, with the weights the predictor holds
        top2 = reference.probs.topk(2, dim=0).values
        differ = result.class_ids != reference.class_ids   # only where two classes tie within 1e-5
        assert (top2[0] - top2[1]).numpy()[differ].max(initial=0.0) < 1e-5, differ.sum()

    fuse_and_check([plain], "engine")
    fuse_and_check([baked], "pytorch")      # its out_proj is baked into the engine: rebuild queued
    executor.step()                         # the rebuild snapshots "baked" ...
    fuse_and_check([plain], "engine")       # ... but "plain" is announced first: the old engine fits again
    assert backend.discarded == 1 and not executor.jobs
    fuse_and_check([], "engine")
    segmenter.close()


def test_weights_become_inputs_in_our_layout_behind_identity_too():
    """A hand-made graph as the exporter writes Linear layers: y = (x @ A^T) @ B^T with A^T an initializer and
    B^T behind an Identity node, plus an initializer two parameters share (left alone: it cannot follow both)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from semla_ros.backends.onnx_weights import OnnxWeightRef
    from semla_ros.backends.onnxruntime_backend import weights_as_inputs

    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(shape).astype(np.float32) for shape in ((3, 4), (2, 3), (2, 2)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["h"]),
         helper.make_node("Identity", ["onnx::MatMul_2"], ["b_t"]),
         helper.make_node("MatMul", ["h", "b_t"], ["g"]),
         helper.make_node("MatMul", ["g", "shared"], ["y"])],
        "linears", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(a.T.copy(), "onnx::MatMul_1"), numpy_helper.from_array(b.T.copy(), "onnx::MatMul_2"),
         numpy_helper.from_array(c, "shared")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    f32 = np.dtype("float32")
    refs = {"a.weight": OnnxWeightRef("onnx::MatMul_1", True, f32),
            "b.weight": OnnxWeightRef("onnx::MatMul_2", True, f32),
            "c.weight": OnnxWeightRef("shared", False, f32), "d.weight": OnnxWeightRef("shared", False, f32)}
    feeds = weights_as_inputs(model, refs, {"a.weight": a.shape, "b.weight": b.shape, "c.weight": c.shape,
                                            "d.weight": c.shape})
    assert [param for param, _ in feeds] == ["a.weight", "b.weight"]
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((5, 4)).astype(np.float32)
    a2, b2 = a + 1.0, b * 2.0                                        # new weights, in our (out, in) layout
    (y,) = session.run(None, {"x": x, **dict(zip([name for _, name in feeds], (a2, b2), strict=True))})
    assert np.allclose(y, x @ a2.T @ b2.T @ c, atol=1e-5)


def test_close_engine_closes_the_segmenter_and_the_engine_it_was_given(cache):
    """What the node runs at cleanup and shutdown: the segmenter's workers and the backend's engine are closed
    (the backend builds nothing more and serves PyTorch), not left to the garbage collector."""
    from semla_ros.engine import close_engine

    predictor, backend = make(cache)   # the build runs inline: the engine is installed
    segmenter = SemlaSegmenter(predictor, None, ConstantNavigator(), backend=backend, executor=InlineExecutor())
    segmenter.process((np.random.default_rng(2).random((60, 80, 3)) * 255).astype(np.uint8))
    assert backend.engine is not None and backend.serving == "engine"
    close_engine(segmenter)
    assert backend.closing.is_set() and backend.engine is None
    with pytest.raises(RuntimeError, match="closed"):
        segmenter.process((np.random.default_rng(3).random((60, 80, 3)) * 255).astype(np.uint8))
