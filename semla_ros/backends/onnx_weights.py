"""Which ONNX initializer holds each of our parameters.

TensorRT's ONNX parser names refittable weights after the ONNX initializers, and ONNX Runtime
takes fused weights as inputs in their place, so updating an engine's weights after a fusion needs
`our parameter name -> initializer name`. The exporter
keeps parameter names when it does not fold constants; when it does (a transposed Linear
weight becomes a new, anonymously named initializer), the initializer is found by value,
in either layout. A parameter found nowhere (folded into something else) is reported as
missing, so the caller knows that refit cannot cover it and a rebuild is needed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np


@dataclass(frozen=True)
class OnnxWeightRef:
    onnx_name: str
    transposed: bool  # the initializer stores our weight transposed (2-D only)
    dtype: np.dtype   # the initializer's element type (fp16 engines store fp16)

    def layout(self, weight: np.ndarray) -> np.ndarray:
        """Our weight in the initializer's layout and type, ready for the refitter."""
        arr = weight.T if self.transposed else weight
        return np.ascontiguousarray(arr, dtype=self.dtype)


@dataclass
class WeightMapping:
    refs: dict[str, OnnxWeightRef] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest()


def load_initializers(onnx_model) -> dict[str, np.ndarray]:
    """Initializers (and Constant-node tensors) of an ONNX model or file, by name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_model)) if isinstance(onnx_model, (str, Path)) else onnx_model
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    arrays[node.output[0]] = numpy_helper.to_array(attr.t)
    return arrays


def map_parameters_to_onnx(initializers: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
                           names: Iterable[str]) -> WeightMapping:
    """Map each of `names` (keys of `params`, float arrays) onto an initializer.

    Values are compared in the initializer's dtype, so an fp16 export maps too.
    """
    by_digest: dict[tuple[str, tuple[int, ...], str], list[str]] = {}
    for init_name, arr in initializers.items():
        if arr.dtype.kind != "f":
            continue
        by_digest.setdefault((str(arr.dtype), arr.shape, _digest(arr)), []).append(init_name)
    dtypes = {str(a.dtype) for a in initializers.values() if a.dtype.kind == "f"} or {"float32"}

    mapping = WeightMapping()
    for name in names:
        weight = np.asarray(params[name])
        init = initializers.get(name)
        if init is not None and init.shape == weight.shape:
            mapping.refs[name] = OnnxWeightRef(name, False, init.dtype)
            continue
        found = None
        for dtype in sorted(dtypes):
            candidates = [(weight, False)] + ([(weight.T, True)] if weight.ndim == 2 else [])
            for arr, transposed in candidates:
                cast = np.ascontiguousarray(arr, dtype=dtype)
                hits = by_digest.get((dtype, cast.shape, _digest(cast)), [])
                if len(hits) == 1:
                    found = OnnxWeightRef(hits[0], transposed, np.dtype(dtype))
                    break
            if found:
                break
        if found is None:
            mapping.missing.append(name)
        else:
            mapping.refs[name] = found
    return mapping
