"""Choose how the network runs, falling back to PyTorch (said once, with the reason)."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from .base import Backend
from .tensorrt_backend import tensorrt_unavailable_reason
from .torch_backend import TorchBackend

BACKENDS = ("torch", "tensorrt")

log = logging.getLogger(__name__)


def model_digest(model: torch.nn.Module) -> str:
    """Hash of every tensor in the state dict (names, shapes, bytes): the ONNX/engine identity."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()[:24]


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
            backend = TensorRTBackend(predictor, export, model_digest=model_digest(model), precision=precision,
                                      max_classes=max_classes, device=device, cache_dir=cache_dir)
            return backend, None
        note = f"TensorRT backend requested but {reason}; running the PyTorch backend instead"
        warn(note)
        precision = precision if torch.device(predictor.device).type == "cuda" else "fp32"
        return TorchBackend(predictor, precision=precision), note
    return TorchBackend(predictor, precision=precision), None
