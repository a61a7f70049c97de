"""TensorRT backend: what runs on CPU (export, name mapping, fallback) and, on a GPU, the engine.

The engine lifecycle it shares with ONNX Runtime (swap during rebuild, vocabulary growth, stale keys,
unreachable weights) is tested on CPU in test_backends_onnxruntime.py; here is what is TensorRT's own.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semla_ros.backends.engine_lifecycle import engine_parameter_names
from semla_ros.backends.factory import make_backend
from semla_ros.backends.onnx_weights import load_initializers, map_parameters_to_onnx
from semla_ros.backends.tensorrt_backend import tensorrt_unavailable_reason
from semla_ros.backends.torch_backend import TorchBackend
from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.checkpoint import state_dict_digest as model_digest
from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.catseg.utils.onnx import export_onnx
from semla_ros.core.targets import semla_target_modules

pytestmark = pytest.mark.slow   # its module fixtures export the network (>10 s)

CLASSES = ["sky", "road", "building", "tree", "person", "car"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_catseg("tiny").eval()
    return model, CatSegPredictor(model, CLASSES)


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny[0], path, precision="fp32")
    return path


def test_name_mapping_covers_every_weight_fusion_changes(tiny, tiny_onnx):
    """Every official LoRA target the image path uses must be refittable by name, or refit is
    incomplete; the others (text tower: stays in PyTorch; the dense last block's q/k: never
    used) are not in the graph at all."""
    model = tiny[0]
    targets = semla_target_modules(model)
    assert len(targets) == 64  # the official list restricted to the tiny model (fixture A: 64)
    params = {f"{m}.weight": model.get_submodule(m).weight.detach().numpy() for m in targets}
    used = engine_parameter_names(model)
    in_engine = [n for n in params if n in used]
    # 2 text blocks x (q, k, v, c_fc, c_proj) stay in PyTorch; the dense block's q, k are unused.
    assert len(in_engine) == 64 - 2 * 5 - 2
    last = model.config.vision.layers - 1
    assert not any(f"visual.transformer.resblocks.{last}.attn.{p}_proj" in n for n in used for p in "qk")
    initializers = load_initializers(tiny_onnx)
    mapping = map_parameters_to_onnx(initializers, params, in_engine)
    assert mapping.missing == [], f"fused weights with no ONNX initializer: {mapping.missing[:5]}"
    assert set(mapping.refs) == set(in_engine)
    text_side = sorted(set(params) - set(in_engine))
    assert map_parameters_to_onnx(initializers, params, text_side).missing == text_side


def test_model_digest_tracks_weights(tiny):
    model = tiny[0]
    before = model_digest(model)
    weight = model.get_submodule(semla_target_modules(model)[0]).weight
    original = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] = original + 1.0
    try:
        assert model_digest(model) != before
    finally:
        with torch.no_grad():
            weight[0, 0] = original
    assert model_digest(model) == before


def test_tensorrt_request_without_tensorrt_runs_pytorch_and_says_why(tiny):
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the fallback path is not taken here")
    said = []
    backend, note = make_backend("tensorrt", tiny[1], warn=said.append)
    assert isinstance(backend, TorchBackend)
    assert note == said[0] and reason in note and "PyTorch" in note
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("openvino", tiny[1])


@pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                    reason=f"TensorRT engine test needs a CUDA GPU and tensorrt: {tensorrt_unavailable_reason()}")
def test_tensorrt_engine_parity_cache_and_refit(tmp_path):
    """fp32 parity (TF32 off: 1e-3), the engine cache, and a refit of exactly the engine's image-path
    fusion targets (52 of the tiny model's 64: the text tower and the dense block's q/k are not in it)."""
    from types import SimpleNamespace

    from semla_ros.backends.engine_lifecycle import EngineBackend
    from semla_ros.backends.tensorrt_backend import TensorRTRuntime
    from semla_ros.core.fusion import WeightStager
    from semla_ros.core.segmenter import InlineExecutor

    torch.manual_seed(0)
    model = build_catseg("tiny").eval().cuda()
    predictor = CatSegPredictor(model, CLASSES, device="cuda")
    image = (np.random.default_rng(0).random((115, 170, 3)) * 255).astype(np.uint8)
    views, _ = predictor.preprocess(image)
    text = predictor.text_embeddings()

    def engine():
        backend = EngineBackend(predictor, TensorRTRuntime(predictor, "fp32", cache_dir=tmp_path),
                                cache_dir=tmp_path, executor=InlineExecutor())
        return backend, backend.wait_ready()

    trt_backend, built = engine()
    assert not built.from_cache and built.capacity == 64 and len(built.reachable) == 52
    ref = TorchBackend(predictor).forward(views, text)
    assert (trt_backend.forward(views, text) - ref).abs().max().item() < 1e-3
    assert trt_backend.serving == "engine"
    again, built_again = engine()
    assert built_again.from_cache

    targets = semla_target_modules(model)
    gen = torch.Generator().manual_seed(1)
    adapter = SimpleNamespace(factors={m: (torch.randn(8, model.get_submodule(m).weight.shape[1], generator=gen) * .05,
                                           torch.randn(model.get_submodule(m).weight.shape[0], 8, generator=gen) * .05)
                                       for m in targets}, scaling=2.0)
    fused = WeightStager(model, targets).stage_fusion([adapter], [1.0])
    predictor.load_weights(fused.weights)
    report = trt_backend.update_weights(fused.weights)
    assert len(targets) == 64 and report.updated == 52 and not report.rebuild_started and report.unreached == ()
    ref_fused = TorchBackend(predictor).forward(views, text)
    assert (ref_fused - ref).abs().max().item() > 1e-3  # the fusion changes the output
    assert (trt_backend.forward(views, text) - ref_fused).abs().max().item() < 1e-3
    assert trt_backend.serving == "engine"


@pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                    reason=f"TensorRT engine test needs a CUDA GPU and tensorrt: {tensorrt_unavailable_reason()}")
def test_tensorrt_vocabulary_growth_builds_a_bigger_profile(tmp_path):
    """70 classes exceed the 64-class profile: PyTorch serves that frame, a 128-class engine is built
    (inline here) and serves the next one, with fp32 parity."""
    from semla_ros.backends.engine_lifecycle import EngineBackend
    from semla_ros.backends.tensorrt_backend import TensorRTRuntime
    from semla_ros.core.segmenter import InlineExecutor

    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny").eval().cuda(), CLASSES, device="cuda")
    backend = EngineBackend(predictor, TensorRTRuntime(predictor, "fp32", cache_dir=tmp_path), cache_dir=tmp_path,
                            executor=InlineExecutor())
    assert backend.wait_ready().capacity == 64
    views, _ = predictor.preprocess((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    predictor.set_classes([f"class {i}" for i in range(70)])
    text = predictor.text_embeddings()
    ref = TorchBackend(predictor).forward(views, text)
    assert (backend.forward(views, text) - ref).abs().max().item() < 1e-5 and backend.serving == "pytorch"
    assert (backend.forward(views, text) - ref).abs().max().item() < 1e-3 and backend.serving == "engine"
    assert backend.engine.capacity == 128
