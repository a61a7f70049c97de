"""Refit needs every fused weight to be found in the exported ONNX graph."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from semla_ros.backends.onnx_weights import load_initializers, map_parameters_to_onnx

onnx = pytest.importorskip("onnx", reason="onnx is part of requirements.txt")


class TwoLinear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)
        self.scaled = torch.nn.Linear(4, 4, bias=False)

    def forward(self, x):
        h = self.b(torch.relu(self.a(x)))
        # A weight used only after an arithmetic op on it is folded into a new constant.
        return h @ (self.scaled.weight * 3.0).T


def export(model, folding: bool, half: bool = False):
    buf = io.BytesIO()
    m = model.half() if half else model
    x = torch.randn(1, 5, 8, dtype=torch.float16 if half else torch.float32)
    torch.onnx.export(m, (x,), buf, input_names=["x"], output_names=["y"], dynamo=False,
                      do_constant_folding=folding)
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("folding", [False, True])
def test_linear_weights_map_by_name_or_value(folding):
    torch.manual_seed(0)
    model = TwoLinear().eval()
    params = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    inits = load_initializers(export(model, folding))
    mapping = map_parameters_to_onnx(inits, params, ["a.weight", "b.weight", "a.bias", "b.bias"])
    assert mapping.complete, mapping.missing
    for name, ref in mapping.refs.items():
        stored = inits[ref.onnx_name]
        np.testing.assert_array_equal(ref.layout(params[name]), stored)


def test_folded_weight_is_reported_missing():
    torch.manual_seed(0)
    model = TwoLinear().eval()
    params = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    mapping = map_parameters_to_onnx(load_initializers(export(model, True)), params, ["scaled.weight"])
    assert mapping.missing == ["scaled.weight"] and not mapping.complete


def test_fp16_export_maps_in_initializer_dtype():
    torch.manual_seed(0)
    model = TwoLinear().eval()
    params = {k: v.detach().numpy().astype(np.float32) for k, v in model.half().named_parameters()}
    mapping = map_parameters_to_onnx(load_initializers(export(model, True, half=True)), params,
                                     ["a.weight", "b.weight"])
    assert mapping.complete
    assert all(ref.dtype == np.float16 for ref in mapping.refs.values())
