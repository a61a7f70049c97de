"""Choose how the network runs, falling back to PyTorch when an engine cannot run here (said once, with the reason)."""
from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path

import torch

from .base import Backend
from .onnxruntime_backend import onnxruntime_unavailable_reason
from .tensorrt_backend import tensorrt_unavailable_reason
from .torch_backend import TorchBackend

BACKENDS = ("torch", "tensorrt", "onnxruntime")
DISPLAY_NAMES = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}

log = logging.getLogger(__name__)


def make_backend(kind: str, predictor, *, precision: str = "fp32", cache_dir: str | Path | None = None,
                 max_classes: int | None = None, executor: Executor | None = None,
                 warn=log.warning) -> tuple[Backend, str | None]:
    """(backend, fallback note). An engine backend (tensorrt, onnxruntime) that cannot run here runs
    PyTorch and returns why, so the caller can say it once; every other problem raises. Engines build in
    the background (`executor`); PyTorch serves until the first one is ready (see `EngineBackend.status`).
    `max_classes` fixes the engine's class profile (default: from the vocabulary, grown when it grows)."""
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
    if kind == "torch":
        return TorchBackend(predictor, precision=precision), None
    device = torch.device(predictor.device)
    if kind == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason is None and device.type != "cuda":
            reason = f"the model runs on '{device}' (TensorRT needs device cuda or auto)"
    else:
        reason = onnxruntime_unavailable_reason(device)
    if reason is not None:
        note = f"{DISPLAY_NAMES[kind]} backend requested but {reason}; running the PyTorch backend instead"
        warn(note)
        return TorchBackend(predictor, precision=precision if device.type == "cuda" else "fp32"), note
    from .engine_lifecycle import EngineBackend

    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTRuntime

        runtime = TensorRTRuntime(predictor, precision, cache_dir=cache_dir)
    else:
        from .onnxruntime_backend import OnnxRuntime

        runtime = OnnxRuntime(predictor, precision)
    return EngineBackend(predictor, runtime, cache_dir=cache_dir, max_classes=max_classes, executor=executor,
                         say=warn), None
