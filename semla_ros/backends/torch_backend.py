"""PyTorch backend: the predictor's own CATSeg module, fp32 or fp16 autocast, CPU or CUDA.

fp16 runs under autocast so the parameters stay fp32: fused weights are written exactly and
the text tower keeps its precision.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .base import PRECISIONS, Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, predictor, precision: str = "fp32"):
        super().__init__(predictor)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(predictor.device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device; use precision 'fp32' on CPU")
        self.precision = precision
        self.model = predictor.model

    def forward(self, clip_images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16,
                                             enabled=self.precision == "fp16"):
            logits = self.model(clip_images.to(self.device), text_embeddings.to(self.device))
        return logits.float()

    def update_weights(self, fused: Mapping[str, torch.Tensor]) -> None:
        """Nothing to do: this backend runs the predictor's model, which already holds `fused`."""
