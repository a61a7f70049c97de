"""Choose how the network runs, falling back to PyTorch (said once, with the reason)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..catseg.checkpoint import state_dict_digest
from .base import Backend
from .tensorrt_backend import tensorrt_unavailable_reason
from .torch_backend import TorchBackend

BACKENDS = ("torch", "tensorrt")

log = logging.getLogger(__name__)


def make_backend(kind: str, predictor, *, precision: str = "fp32", cache_dir: str | Path | None = None,
                 max_classes: int = 64, warn=log.warning) -> tuple[Backend, str | None]:
    """(backend, fallback note). A TensorRT request without TensorRT or a GPU runs PyTorch and
    returns why, so the node can say it once; every other problem raises."""
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
    if kind == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason is None:
            from ..catseg.utils.onnx import export_onnx
            from .tensorrt_backend import TensorRTBackend

            model = predictor.model

            def export(path, prec):
                export_onnx(model, path, precision=prec)

            device = str(predictor.device) if str(predictor.device).startswith("cuda") else "cuda:0"
            backend = TensorRTBackend(predictor, export, model_digest=state_dict_digest(model), precision=precision,
                                      max_classes=max_classes, device=device, cache_dir=cache_dir)
            return backend, None
        note = f"TensorRT backend requested but {reason}; running the PyTorch backend instead"
        warn(note)
        precision = precision if torch.device(predictor.device).type == "cuda" else "fp32"
        return TorchBackend(predictor, precision=precision), note
    return TorchBackend(predictor, precision=precision), None
