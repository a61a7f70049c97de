"""The exported ONNX graph (dynamic view and class axes) matches PyTorch in onnxruntime."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from semla_ros.catseg import build_catseg, get_config
from semla_ros.catseg.utils.onnx import export_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(5)
    config = get_config("tiny")
    # pad_len 8 keeps the check small and lets T = pad_len (no padding tokens at all) be exercised too
    config = dataclasses.replace(config, aggregator=dataclasses.replace(config.aggregator, pad_len=8))
    return build_catseg(config)


def _export(model, path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-only Python conditions
        export_onnx(model, path, **kwargs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_onnx_export_matches_pytorch_for_several_view_and_class_counts(small_model, tmp_path):
    session = _export(small_model, tmp_path / "catseg.onnx", num_classes=3)
    for views, classes in ((1, 3), (5, 5), (1, 8)):
        image = torch.randn(views, 3, 384, 384)
        text = torch.nn.functional.normalize(torch.randn(classes, 48), dim=-1)
        with torch.no_grad():
            expected = small_model(image, text).numpy()
        (actual,) = session.run(None, {"image": image.numpy(), "text_embeddings": text.numpy()})
        assert actual.shape == (views, classes, 96, 96)
        assert np.abs(actual - expected).max() < 1e-4, (views, classes)


@pytest.mark.slow
def test_fp16_export_leaves_the_model_in_fp32(small_model, tmp_path):
    session = _export(small_model, tmp_path / "catseg16.onnx", precision="fp16", num_classes=4)
    assert all(p.dtype == torch.float32 for p in small_model.parameters())
    image = torch.randn(1, 3, 384, 384)
    text = torch.nn.functional.normalize(torch.randn(4, 48), dim=-1)
    with torch.no_grad():
        expected = small_model(image, text).numpy()
    (actual,) = session.run(None, {"image": image.half().numpy(), "text_embeddings": text.half().numpy()})
    assert actual.dtype == np.float16
    assert np.abs(actual.astype(np.float32) - expected).max() < 2e-2


def test_export_refuses_what_it_cannot_represent(tmp_path):
    model = build_catseg("tiny", device="meta")
    with pytest.raises(ValueError, match="num_classes"):
        export_onnx(model, tmp_path / "x.onnx", num_classes=300)
    with pytest.raises(ValueError, match="precision"):
        export_onnx(model, tmp_path / "x.onnx", precision="int8")
