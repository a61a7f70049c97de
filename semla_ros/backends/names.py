"""The names of the backends and precisions: what the parameter table, `--help` and the CLIs offer as choices.

Why its own module, without torch: the node's parameter table, its validation and `--help` need these names
before (or without) any network is built, and importing torch takes seconds (README, "Start-up").
"""
from __future__ import annotations

from typing import Literal, get_args

BackendName = Literal["auto", "torch", "tensorrt", "onnxruntime"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
AUTO = BACKENDS[0]
DISPLAY_NAMES = {"torch": "PyTorch", "tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}

PrecisionName = Literal["fp32", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
