"""Choose how the network runs, falling back to PyTorch when an engine cannot run here (said once, with the reason).

`backend: auto` (the default) picks the fastest backend that can run here: TensorRT where a CUDA GPU and
TensorRT are present, ONNX Runtime where it has a provider for the model's device (about twice as fast as
PyTorch eager on a CPU), PyTorch otherwise. The rule is a pure function of what is available
(`choose_backend`), so every combination is tested on any machine; `auto_backend` probes this one.
"""
from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import Backend
from .names import AUTO, BACKENDS, DISPLAY_NAMES, BackendName  # noqa: F401  (BackendName: its old home)
from .onnxruntime_backend import onnxruntime_unavailable_reason
from .tensorrt_backend import tensorrt_unavailable_reason
from .torch_backend import TorchBackend

ONNXRUNTIME_PRECISIONS = ("fp32",)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    """What `backend: auto` runs, and why (said once: log, /diagnostics, `semla-bench`)."""

    kind: BackendName   # never "auto": the backend it resolved to
    reason: str

    def __str__(self) -> str:
        return f"backend auto: {self.kind} ({self.reason})"


def choose_backend(device_type: str, precision: str, tensorrt_missing: str | None,
                   onnxruntime_missing: str | None) -> BackendChoice:
    """The fastest backend for a model on `device_type` ('cpu' or 'cuda') at `precision`, given why TensorRT
    and ONNX Runtime cannot run here (None: they can; `onnxruntime_missing` is about the model's device)."""
    if device_type == "cuda" and tensorrt_missing is None:
        return BackendChoice("tensorrt", "a CUDA GPU and TensorRT are present")
    skipped = [f"TensorRT: {tensorrt_missing}"] if device_type == "cuda" else []
    if onnxruntime_missing is None and precision in ONNXRUNTIME_PRECISIONS:
        provider = "CUDA" if device_type == "cuda" else "CPU"
        return BackendChoice("onnxruntime", "; ".join(
            [f"ONNX Runtime is installed with its {provider} execution provider", *skipped]))
    if onnxruntime_missing is not None:
        skipped.append(f"ONNX Runtime: {onnxruntime_missing}")
    else:
        skipped.append(f"ONNX Runtime: runs {', '.join(ONNXRUNTIME_PRECISIONS)} only, precision is {precision}")
    return BackendChoice("torch", "no faster backend can run here (" + "; ".join(skipped) + ")")


def auto_backend(device: str | torch.device, precision: str = "fp32") -> BackendChoice:
    """`choose_backend` for what is installed on this machine, for a model on `device`."""
    device_type = torch.device(device).type
    tensorrt_missing = tensorrt_unavailable_reason() if device_type == "cuda" else "the model runs on the CPU"
    return choose_backend(device_type, precision, tensorrt_missing, onnxruntime_unavailable_reason(device))


def make_backend(kind: str, predictor, *, precision: str = "fp32", cache_dir: str | Path | None = None,
                 max_classes: int | None = None, executor: Executor | None = None,
                 warn=log.warning) -> tuple[Backend, str | None]:
    """(backend, fallback note). An engine backend (tensorrt, onnxruntime) that cannot run here runs
    PyTorch and returns why, so the caller can say it once; every other problem raises. Engines build in
    the background (`executor`); PyTorch serves until the first one is ready (see `EngineBackend.status`).
    `max_classes` fixes the engine's class profile (default: from the vocabulary, grown when it grows).
    `auto` runs `auto_backend`'s choice (callers that report it resolve it first)."""
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
    if kind == AUTO:
        kind = auto_backend(predictor.device, precision).kind
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
    from .engine_lifecycle import EngineBackend, EngineRuntime

    runtime: EngineRuntime
    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTRuntime

        runtime = TensorRTRuntime(predictor, precision, cache_dir=cache_dir)
    else:
        from .onnxruntime_backend import OnnxRuntime

        runtime = OnnxRuntime(predictor, precision)
    return EngineBackend(predictor, runtime, cache_dir=cache_dir, max_classes=max_classes, executor=executor,
                         say=warn), None
