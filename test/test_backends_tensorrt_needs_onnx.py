"""backend:=tensorrt needs onnx too (the network reaches TensorRT as an ONNX graph): without it the factory
runs PyTorch and says why, instead of failing the build when the export starts."""
from __future__ import annotations

import sys

import pytest


def test_missing_onnx_is_a_reason_and_the_factory_falls_back(monkeypatch):
    from semla_ros.backends.factory import make_backend
    from semla_ros.backends.tensorrt_backend import tensorrt_unavailable_reason
    from semla_ros.backends.torch_backend import TorchBackend
    from semla_ros.catseg.build import build_catseg
    from semla_ros.catseg.predictor import CatSegPredictor

    monkeypatch.setitem(sys.modules, "onnx", None)   # `import onnx` now raises ImportError, as without the package
    reason = tensorrt_unavailable_reason()
    assert reason is not None and "'onnx' Python package is not installed" in reason
    predictor = CatSegPredictor(build_catseg("tiny").eval(), ["road", "sky"])
    said = []
    backend, note = make_backend("tensorrt", predictor, warn=said.append)
    assert isinstance(backend, TorchBackend) and note == said[0] and "onnx" in note and "PyTorch" in note


def test_every_missing_part_is_named_at_once(monkeypatch):
    import torch

    from semla_ros.backends.tensorrt_backend import tensorrt_unavailable_reason

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here: the no-GPU part of the reason does not apply")
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    reason = tensorrt_unavailable_reason()
    assert "'tensorrt'" in reason and "'onnx'" in reason and "no CUDA GPU" in reason
